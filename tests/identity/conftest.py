"""Fixtures for SCIM: the provider's account, allowed to provision, and its token."""

import pytest
from django.contrib.auth.models import Permission


@pytest.fixture
def provider(make_user):
    """The identity provider's own account here, holding tokens.scim_provision."""
    account = make_user("okta-scim")
    account.user_permissions.add(Permission.objects.get(codename="scim_provision"))
    return account


@pytest.fixture
def scim_token(provider, issue):
    """A bearer token of the provider's account: the value a provider's SCIM client is given."""
    _token, plaintext = issue(provider, name="Okta provisioning")
    return plaintext
