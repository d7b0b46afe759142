"""The sign-in backend: Django's password check, refused for service accounts whatever password they hold."""

from django.contrib.auth.backends import ModelBackend

from .models import is_service_account


class PeopleOnlyModelBackend(ModelBackend):
    """Authenticate people by username and password; never a service account.

    Only the sign-in is refused here, after the password was checked (so a service account's name
    costs the same time as any other); no session is ever made for one, so loading a session's user
    needs no extra query.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and is_service_account(user):
            return None
        return user
