"""System checks: a misconfigured site refuses to start instead of running unprotected."""

from django.conf import settings as django_settings

from tokens.checks import check_middleware_order


def test_the_shipped_middleware_order_passes(settings):
    assert check_middleware_order(None) == []


def test_api_authentication_before_session_authentication_is_refused(settings):
    order = list(django_settings.MIDDLEWARE)
    api = "tokens.middleware.ApiAuthenticationMiddleware"
    order.remove(api)
    order.insert(order.index("django.contrib.auth.middleware.AuthenticationMiddleware"), api)
    settings.MIDDLEWARE = order
    assert [error.id for error in check_middleware_order(None)] == ["tokens.E011"]


def test_a_missing_fail_closed_middleware_is_refused(settings):
    settings.MIDDLEWARE = [m for m in django_settings.MIDDLEWARE if "DatabaseUnavailable" not in m]
    errors = check_middleware_order(None)
    assert [error.id for error in errors] == ["tokens.E010"]
    assert "DatabaseUnavailableMiddleware" in errors[0].msg
