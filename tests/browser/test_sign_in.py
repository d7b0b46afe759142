import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_person_signs_in_and_lands_on_the_profile(sign_in, user, page):
    sign_in(user)
    assert page.get_by_role("heading", name="Profile").is_visible()
    assert page.get_by_role("link", name="Authorizations").first.is_visible()
