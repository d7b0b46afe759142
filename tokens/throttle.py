"""Throttles: sign-in, password resets, failed API authentication and leak reports, on one atomic counter.

Every throttle counts with ``AttemptCounter.objects.hit``: one UPSERT in the database shared by every
process and node, that returns the new count. The attempt is counted BEFORE the work it limits (the
password hash, the reset mail, the credential lookup), so sixteen attempts in flight at once get the
counts 1 to 16 and only those within the limit go on; an attempt beyond it is refused without the
work. (The database cache used before had no atomic increment: parallel sign-ins all read the old
count, all had their password checked, and a right one among them signed in.)

Sign-in, two limits because they answer two attacks: many passwords against one account (per
username) and many accounts from one client (per address). While either is used up the password is
not even checked (a right guess during the lock teaches nothing) and the form answers 429. A sign-in
that succeeds clears its username's count and gives its attempt back to the address, so the address
limit counts failures only. Someone who fails on purpose can lock a username for the window; that
costs its owner at most the window, never the account.

Password reset is offered only with a mail backend that sends mail (``password_reset_offered``): the
console backend would print each reset link into the server's log, where anyone who reads the log
could take over the account. Reset requests are limited per address and per e-mail address, and the
answer is the same page whether a mail was sent, limited, or the address is unknown.

API authentication: a client address that keeps failing is answered 429 for a while (see
``api_client_locked`` and ``count_api_failure``); only failures write, so integrations with valid
credentials never pay for it.

Leak reports (``/api/credentials/revoke``) take no credential, so each costs a lookup per value for
anyone: they are limited per client address, counted before any lookup.
"""

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from . import metrics
from .http import client_ip, limited_address
from .models import AttemptCounter, is_service_account

log = logging.getLogger(__name__)

# The windows are fixed here; how many attempts each allows is a setting (portal/settings.py, README.md).
LOCK_WINDOW = timedelta(minutes=15)
RESET_WINDOW = timedelta(hours=1)
# The default of 30 is far above what an integration with a valid credential does by mistake (a cron
# job retrying a revoked token once a minute, a deploy rolling out a new one), far below what guessing needs.
API_FAILURE_WINDOW = timedelta(minutes=1)
LEAK_REPORT_WINDOW = timedelta(minutes=10)

# Backends that do not send mail: console and file write each message, reset link included, where
# operators and log collectors read; dummy drops it. Reset is not offered with them.
NON_SENDING_MAIL_BACKENDS = frozenset(
    {
        "django.core.mail.backends.console.EmailBackend",
        "django.core.mail.backends.filebased.EmailBackend",
        "django.core.mail.backends.dummy.EmailBackend",
    }
)


@dataclass(frozen=True)
class Limit:
    """At most ``settings.<setting>`` attempts per *window* under keys that start with *scope*."""

    scope: str
    setting: str
    window: timedelta

    @property
    def most(self):
        # Read on every use, so the limit is the one configured now (tests change it with a fixture).
        return getattr(settings, self.setting)

    def count(self, subject, *, now=None):
        """Count one attempt for *subject*; return None while within the limit, else seconds to wait."""
        now = now or timezone.now()
        hits, started = AttemptCounter.objects.hit(key=self.key(subject), window=self.window, now=now)
        if hits <= self.most:
            return None
        return max(1, math.ceil((started + self.window - now).total_seconds()))

    def key(self, subject):
        return f"{self.scope}:{subject}"


def _hashed(text):
    # Usernames and e-mail addresses are keyed-hashed, so the table never holds a list of guessed names.
    return salted_hmac("tokens.throttle", text.strip().casefold()).hexdigest()[:64]


def _address(request):
    return limited_address(client_ip(request))


SIGN_IN_USERNAME = Limit("sign-in:user", "SIGN_IN_FAILURES_PER_USERNAME", LOCK_WINDOW)
SIGN_IN_ADDRESS = Limit("sign-in:address", "SIGN_IN_FAILURES_PER_ADDRESS", LOCK_WINDOW)
RESET_EMAIL = Limit("reset:email", "PASSWORD_RESETS_PER_EMAIL", RESET_WINDOW)
RESET_ADDRESS = Limit("reset:address", "PASSWORD_RESETS_PER_ADDRESS", RESET_WINDOW)
API_ADDRESS = Limit("api:address", "API_FAILURES_PER_ADDRESS", API_FAILURE_WINDOW)
LEAK_REPORT_ADDRESS = Limit("leak-reports:address", "LEAK_REPORTS_PER_ADDRESS", LEAK_REPORT_WINDOW)


def count_sign_in(request, username):
    """Count a sign-in attempt for *username* and the address; return seconds to wait, or None to go on."""
    waits = [
        SIGN_IN_USERNAME.count(_hashed(username)),
        SIGN_IN_ADDRESS.count(_address(request)),
    ]
    waits = [wait for wait in waits if wait is not None]
    return max(waits) if waits else None


def forget_sign_in(request, username):
    """After a successful sign-in: clear the username's count, give the address its attempt back."""
    AttemptCounter.objects.forget(key=SIGN_IN_USERNAME.key(_hashed(username)))
    AttemptCounter.objects.give_back(key=SIGN_IN_ADDRESS.key(_address(request)))


class ThrottleMixin:
    """Count each sign-in before the password is checked; refuse it without the check past the limit."""

    throttled_message = _(
        "Too many failed sign-in attempts. For your account's safety, signing in is paused for "
        "%(minutes)d minutes. Try again later."
    )
    retry_after = None

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        # Counted first, atomically: parallel attempts cannot all slip under the limit, and a correct
        # guess beyond it is worth nothing because the password is never looked at.
        self.retry_after = count_sign_in(self.request, username)
        if self.retry_after is not None:
            metrics.count(metrics.SIGN_IN_FAILURES, "throttled")
            raise ValidationError(
                self.throttled_message,
                code="throttled",
                params={"minutes": max(1, math.ceil(self.retry_after / 60))},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            metrics.count(metrics.SIGN_IN_FAILURES, "invalid")
            raise
        forget_sign_in(self.request, username)
        return cleaned


class ThrottledAuthenticationForm(ThrottleMixin, AuthenticationForm):
    """The sign-in form of /accounts/login/."""


class ThrottledAdminAuthenticationForm(ThrottleMixin, AdminAuthenticationForm):
    """The admin's sign-in form (``portal.admin.PortalAdminSite``), with the same counts as the site's."""


class ThrottledLoginView(auth_views.LoginView):
    """Django's LoginView with the throttle: a locked sign-in answers 429 Too Many Requests."""

    form_class = ThrottledAuthenticationForm

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "password_reset_offered": password_reset_offered()}

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, code="throttled"):
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response


# --- password reset ---------------------------------------------------------------------------------------


def password_reset_offered():
    """Return True when reset mails really leave the server (never into a log or a file).

    Never while PASSWORD_SIGN_IN is off: a reset would set a password nobody may use.
    """
    return settings.EMAIL_BACKEND not in NON_SENDING_MAIL_BACKENDS and settings.PASSWORD_SIGN_IN != "off"


class ResetOfferedMixin:
    """Answer 404 on every reset page while reset is not offered: the links would only reach a log."""

    def dispatch(self, request, *args, **kwargs):
        if not password_reset_offered():
            raise Http404
        return super().dispatch(request, *args, **kwargs)


class DeferredPasswordResetForm(PasswordResetForm):
    """Django's reset form, whose ``save()`` (find the accounts, make and send the mails) waits to be run."""

    deferred = None

    def save(self, **options):
        self.deferred = partial(super().save, **options)


class RedirectThenWork(HttpResponseRedirect):
    """A redirect that runs *work* once the server has sent it: WSGI calls ``close()`` after the body."""

    def __init__(self, redirect_to, *, work):
        super().__init__(redirect_to)
        self.work = work

    def close(self):
        try:
            self.work()
        except Exception:
            # The client has its answer already; a mail server that fails is the operator's to see.
            log.exception("password reset mail could not be sent")
        finally:
            super().close()


class ThrottledPasswordResetView(ResetOfferedMixin, auth_views.PasswordResetView):
    """Send a reset mail at most a few times an hour per e-mail address and per client address.

    A limited request gets the same "check your mail" page as any other, so the answer says nothing
    about whether an address has an account or was asked for too often. Nor does its timing: the
    accounts are looked up and the mail is made and sent only after the answer has gone out, so a known
    address (a mail to render and hand to a mail server) answers as fast as an unknown one.
    """

    form_class = DeferredPasswordResetForm

    def form_valid(self, form):
        email = form.cleaned_data["email"]
        # Both counted, each before any mail is made.
        limited = [RESET_ADDRESS.count(_address(self.request)), RESET_EMAIL.count(_hashed(email))]
        if any(wait is not None for wait in limited):
            return HttpResponseRedirect(self.get_success_url())
        response = super().form_valid(form)
        return RedirectThenWork(response.url, work=form.deferred)


class PasswordResetDoneView(ResetOfferedMixin, auth_views.PasswordResetDoneView):
    pass


class PasswordResetConfirmView(ResetOfferedMixin, auth_views.PasswordResetConfirmView):
    def get_user(self, uidb64):
        # A link for a service account is refused like a broken one, however it was made.
        user = super().get_user(uidb64)
        return None if is_service_account(user) else user


class PasswordResetCompleteView(ResetOfferedMixin, auth_views.PasswordResetCompleteView):
    pass


# --- API authentication failures ---------------------------------------------------------------------------


def api_client_locked(ip):
    """Return seconds to wait while the client address *ip* has used up its failures, else None.

    One indexed read; asked only before a lookup that could be a guess (see ``tokens.uses``).
    """
    now = timezone.now()
    hits, started = AttemptCounter.objects.current(
        key=API_ADDRESS.key(limited_address(ip)), window=API_ADDRESS.window, now=now
    )
    if hits < API_ADDRESS.most:
        return None
    return max(1, math.ceil((started + API_ADDRESS.window - now).total_seconds()))


def count_leak_report(request):
    """Count one leak report from the request's address; return seconds to wait past the limit."""
    return LEAK_REPORT_ADDRESS.count(_address(request))


def count_api_failure(ip):
    """Count one failed API authentication from the client address *ip*; return seconds to wait, if past."""
    return API_ADDRESS.count(limited_address(ip))
