"""Sign-in throttle: repeated failed sign-ins from one address, or for one username, are refused for a while.

Counts live in Django's cache, which settings make a database cache shared by every process and node,
so an attacker gains nothing by spreading attempts over workers. While a username or an address is
locked the password is not even checked (a right guess during the lock teaches the attacker nothing)
and the form answers 429 with a message that says when to try again.

Two limits, because they answer two attacks: many passwords against one account (per username) and
many accounts from one client (per address). Someone who fails on purpose can lock a username for
the window; that costs its owner at most the window, never the account, and other users signing in
from elsewhere are not affected.

The cache has no atomic increment, so a burst of simultaneous failures may be counted a little short;
each attempt still costs an Argon2 verification and the lock closes within a few attempts.
"""

import hashlib
from datetime import timedelta

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.translation import gettext_lazy as _

from .http import client_ip

MAX_FAILURES_PER_USERNAME = 5
MAX_FAILURES_PER_ADDRESS = 20
LOCK_WINDOW = timedelta(minutes=15)


def _keys(request, username):
    # The username is hashed so the cache table never holds a list of guessed names.
    name = hashlib.sha256(username.strip().casefold().encode()).hexdigest()
    return {
        f"sign-in-failures:user:{name}": MAX_FAILURES_PER_USERNAME,
        f"sign-in-failures:address:{client_ip(request) or 'unknown'}": MAX_FAILURES_PER_ADDRESS,
    }


def is_locked(request, username):
    """Return True while *username* or the request's address has used up its failed sign-ins."""
    keys = _keys(request, username)
    counts = cache.get_many(list(keys))
    return any(counts.get(key, 0) >= limit for key, limit in keys.items())


def record_failure(request, username):
    """Count one failed sign-in for *username* and the request's address; the window restarts."""
    keys = _keys(request, username)
    counts = cache.get_many(list(keys))
    cache.set_many({key: counts.get(key, 0) + 1 for key in keys}, timeout=LOCK_WINDOW.total_seconds())


def forget_username(request, username):
    """Clear the username's failures after a successful sign-in (the address keeps its count)."""
    cache.delete(next(iter(_keys(request, username))))


class ThrottleMixin:
    """Refuse a locked sign-in before the password is checked, and count each failure."""

    throttled_message = _(
        "Too many failed sign-in attempts. For your account's safety, signing in is paused for "
        "%(minutes)d minutes. Try again later."
    )

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        # Checked before the password, so a correct guess during the lock is worth nothing.
        if is_locked(self.request, username):
            raise ValidationError(
                self.throttled_message,
                code="throttled",
                params={"minutes": int(LOCK_WINDOW.total_seconds() // 60)},
            )
        try:
            return super().clean()
        except ValidationError:
            record_failure(self.request, username)
            raise


class ThrottledAuthenticationForm(ThrottleMixin, AuthenticationForm):
    """The sign-in form of /accounts/login/."""


class ThrottledAdminAuthenticationForm(ThrottleMixin, AdminAuthenticationForm):
    """The admin's sign-in form, for ``admin.site.login_form`` (same counts as the site's form)."""


class ThrottledLoginView(LoginView):
    """Django's LoginView with the throttle: a locked sign-in answers 429 Too Many Requests."""

    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, code="throttled"):
            response.status_code = 429
            response["Retry-After"] = str(int(LOCK_WINDOW.total_seconds()))
        return response

    def form_valid(self, form):
        forget_username(self.request, form.get_user().get_username())
        return super().form_valid(form)
