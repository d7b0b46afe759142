"""Recent sign-in: steps that hand out or widen power need a sign-in within SUDO_MINUTES.

Creating or rotating a token shows a new secret; widening a token's limits gives an old secret more
reach. A session left open on a shared desk, or a session cookie stolen hours ago, should not be
enough for either. The session notes when its person last proved who they are (signing in, or
confirming on /accounts/confirm/ with their password or a fresh provider sign-in); a step past the
window is put aside and the person is asked to confirm.

Putting the step aside keeps what they typed: the POSTed fields (never a token value: the forms that
reach here hold names, expiries and limits) are signed and kept in the session with the path and the
user they belong to, and after the confirmation one button sends them on to the same page, with a
fresh CSRF token, as if the first submission had gone through.
"""

import time
from functools import wraps

from django.conf import settings
from django.core import signing
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from ..models.restrictions import Limits

SIGNED_IN_AT = "tokens.signed_in_at"
PENDING_STEP = "tokens.pending_step"
PENDING_SALT = "tokens.identity.recent.pending"
# A provider's clock may run a little ahead of ours.
CLOCK_LEEWAY = 60


def window():
    return settings.SUDO_MINUTES * 60


def stamp(request, at=None):
    """Note in the session that its person proved who they are at *at* (seconds since the epoch; now)."""
    request.session[SIGNED_IN_AT] = int(at if at is not None else time.time())


def note_sign_in(sender, request, user, **kwargs):
    """``user_logged_in`` receiver: every sign-in, whichever way, starts the window.

    Django's own hook for this (it keeps ``last_login`` the same way): the site's form, the admin's,
    the provider's callback and ``Client.force_login`` all call ``login()``, and nothing else does.
    """
    if request is not None and hasattr(request, "session"):
        stamp(request)


def signed_in_recently(request):
    """Return True when the session's person signed in or confirmed within the window."""
    at = request.session.get(SIGNED_IN_AT)
    if not isinstance(at, int):
        return False
    now = time.time()
    return at <= now + CLOCK_LEEWAY and now - at <= window()


def ask_to_confirm(request):
    """Put the POSTed step aside in the session (signed) and send the person to confirm who they are."""
    fields = {key: request.POST.getlist(key) for key in request.POST if key != "csrfmiddlewaretoken"}
    request.session[PENDING_STEP] = signing.dumps(
        {"path": request.path, "user": request.user.pk, "fields": fields}, salt=PENDING_SALT
    )
    response = HttpResponseRedirect(reverse("confirm-sign-in"))
    response.status_code = 303
    return response


def pending_step(request, *, keep=False):
    """Return the step put aside for this person ({"path", "fields"}), or None; forget it unless *keep*."""
    saved = request.session.get(PENDING_STEP) if keep else request.session.pop(PENDING_STEP, None)
    if not saved:
        return None
    try:
        step = signing.loads(saved, salt=PENDING_SALT, max_age=window() + 3600)
    except signing.BadSignature:
        return None
    path = step.get("path")
    if step.get("user") != request.user.pk or not isinstance(path, str):
        return None
    if not path.startswith("/") or not url_has_allowed_host_and_scheme(path, allowed_hosts=set()):
        return None
    return {
        "path": path,
        "fields": sorted((key, value) for key, values in step["fields"].items() for value in values),
    }


# The API's answer (403) to a browser session past the window; the pages ask to confirm instead.
CONFIRM_FIRST = _(
    "Confirm it is you first: with a browser session, creating, rotating or widening a token needs a "
    "sign-in within the last SUDO_MINUTES minutes. Sign in again, or confirm at /accounts/confirm/."
)


def session_past_window(request):
    """Return True for an API request made with a browser session whose sign-in is older than the window.

    Bearer tokens are not asked: what a token may do to tokens is the policy's and the token's own rule.
    """
    return getattr(request, "auth", None) is None and not signed_in_recently(request)


def recent_sign_in_required(view):
    """Decorate a page whose POST is a sensitive step: past the window, confirm first, then go on."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method == "POST" and not signed_in_recently(request):
            return ask_to_confirm(request)
        return view(request, *args, **kwargs)

    return wrapper


def widens(token, **given):
    """Return True when the limits *given* (access, permissions, allowed_ips) would widen *token*.

    The same measure as a bearer token's grants (``Limits.covers``): read only becoming read and write,
    a list of permissions becoming "all" or gaining one, an allow-list becoming "anywhere" or gaining an
    address outside it. Values that do not parse are not judged here: saving them fails anyway, with
    the right message.
    """
    before = Limits.of(token)
    try:
        return not all(before.covers(field, value) for field, value in given.items())
    except (TypeError, ValueError):
        return False
