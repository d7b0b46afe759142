"""Sign-in with the organisation's OpenID Connect provider, on mozilla-django-oidc.

The library runs the authorization code flow: PKCE (S256), a ``state`` and a ``nonce`` per attempt kept
in the session and dropped at the callback (so each is used once), the code exchanged at the token
endpoint. What it leaves open is closed here:

- its settings come from the provider's discovery document, read on first use (``provider.py``);
- the client authenticates with ``client_secret_basic`` wherever the provider accepts it;
- the ID token's signature is checked against the provider's published keys (asymmetric algorithms
  only), with exactly our issuer and our client as audience, a required expiry, and the nonce
  compared in constant time;
- a person is found by (issuer, ``sub``) and nothing else: the library's default, matching by e-mail,
  would hand an account to whoever is given a re-used address;
- the groups claim (ID token and userinfo both) keeps Django groups, staff and superuser in step;
- every way a sign-in can fail ends on a page that says what happened and what to do.

A callback serves three purposes, fixed when the attempt starts and kept with its ``state``: signing
in, connecting the provider account to the signed-in local account (profile), and confirming who one
is for a sensitive step (``recent.py``; ``prompt=login`` and ``max_age=0``, then ``auth_time`` checked).
"""

import logging
import re
from hashlib import sha256
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from ..models import ProviderIdentity, ProvisionedUser, is_service_account
from . import provider, recent

logger = logging.getLogger(__name__)

SIGN_IN, CONNECT, CONFIRM = "sign-in", "connect", "confirm"
ID_TOKEN = "oidc_id_token"  # where the library keeps the ID token: the hint for RP-initiated logout
# Seconds an ID token's times may be off our clock.
LEEWAY = 60
USERNAME_MAX_LENGTH = 150

# The library's settings that are fixed here, not left to the deployment.
LIBRARY_SETTINGS = {
    "OIDC_USE_PKCE": True,
    "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
    "OIDC_USE_NONCE": True,
    "OIDC_STORE_ID_TOKEN": True,
    "OIDC_STORE_ACCESS_TOKEN": False,
    "OIDC_CREATE_USER": True,
    "OIDC_ALLOW_UNSECURED_JWT": False,
    "OIDC_VERIFY_SSL": True,
    "OIDC_TIMEOUT": provider.TIMEOUT,
    "OIDC_PROXY": None,
    "OIDC_AUTHENTICATION_CALLBACK_URL": "oidc-callback",
    "OIDC_REDIRECT_FIELD_NAME": "next",
    "OIDC_REDIRECT_ALLOWED_HOSTS": [],
}


def library_setting(name, *default):
    """Answer the library's ``get_settings``: discovered endpoints, our settings, or the fixed choices."""
    if name == "OIDC_OP_AUTHORIZATION_ENDPOINT":
        return provider.metadata().authorization_endpoint
    if name == "OIDC_OP_TOKEN_ENDPOINT":
        return provider.metadata().token_endpoint
    if name == "OIDC_OP_USER_ENDPOINT":
        return provider.metadata().userinfo_endpoint
    if name == "OIDC_OP_JWKS_ENDPOINT":
        return provider.metadata().jwks_uri
    if name == "OIDC_TOKEN_USE_BASIC_AUTH":
        return provider.metadata().token_auth_basic
    if name == "OIDC_RP_CLIENT_ID":
        return settings.OIDC_CLIENT_ID
    if name == "OIDC_RP_CLIENT_SECRET":
        return settings.OIDC_CLIENT_SECRET
    if name == "OIDC_RP_SCOPES":
        return settings.OIDC_SCOPES
    if name in LIBRARY_SETTINGS:
        return LIBRARY_SETTINGS[name]
    return import_from_settings(name, *default)


class SignInRefused(Exception):
    """A provider sign-in that was verified but must not go on; *message* tells the person why."""

    def __init__(self, title, message, status=403):
        super().__init__(str(message))
        self.title, self.message, self.status = title, message, status


def provisioned_account_for(claims):
    """Return the account provisioning made for the person of *claims* ahead of their first sign-in, or None.

    Consulted before the collision check: an account SCIM created with the provider's own identifier of
    the person as its ``externalId`` (equal to the ID token's ``sub``) is this person's by the provider's
    word, so it is linked, not refused. An account already linked to another identity of this provider
    is not taken over.
    """
    record = ProvisionedUser.objects.by_external_id(claims.get("sub"))
    if (
        record is None
        or ProviderIdentity.objects.filter(user=record.user, issuer=settings.OIDC_ISSUER).exists()
    ):
        return None
    return record.user


# --- the backend ------------------------------------------------------------------------------------------


class OrganisationBackend(OIDCAuthenticationBackend):
    """The library's backend, with our discovery, token checks and (issuer, sub) matching."""

    get_settings = staticmethod(library_setting)

    def __init__(self, *args, **kwargs):
        # Django makes a backend for every authenticate() and session lookup, password sign-ins too:
        # nothing here may reach the provider. Its endpoints are looked up when used (below).
        self.UserModel = get_user_model()

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: provider.metadata().token_endpoint)
    OIDC_OP_USER_ENDPOINT = property(lambda self: provider.metadata().userinfo_endpoint)
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: provider.metadata().jwks_uri)
    OIDC_RP_CLIENT_ID = property(lambda self: settings.OIDC_CLIENT_ID)
    OIDC_RP_CLIENT_SECRET = property(lambda self: settings.OIDC_CLIENT_SECRET)

    # The library's get_user skips the is_active check: a switched-off person's session must end.
    get_user = ModelBackend.get_user

    def authenticate(self, request, **kwargs):
        if not provider.enabled() or request is None or "nonce" not in kwargs:
            return None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        """Return the ID token's claims once signature, issuer, audience, times and nonce hold."""
        try:
            key, algorithm = provider.signing_key(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=settings.OIDC_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(f"ID token refused: {error}") from error
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != settings.OIDC_CLIENT_ID:
            raise SuspiciousOperation("ID token refused: issued to another party as well")
        if "nonce" in kwargs:
            expected, given = kwargs["nonce"], claims.get("nonce")
            if not expected or not isinstance(given, str) or not constant_time_compare(given, expected):
                raise SuspiciousOperation("ID token refused: its nonce is not this attempt's")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise SuspiciousOperation("ID token refused: no subject")
        return claims

    def get_userinfo(self, access_token, id_token, payload):
        if not self.OIDC_OP_USER_ENDPOINT or not access_token:
            return {}
        return super().get_userinfo(access_token, id_token, payload)

    def get_or_create_user(self, access_token, id_token, payload):
        """Return the person of the verified ID token *payload*, created or linked as the purpose says."""
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict) or (userinfo and userinfo.get("sub") != payload["sub"]):
            # OpenID Connect Core 5.3.2: a userinfo answer about someone else must not be used.
            raise SignInRefused(
                _("The provider's answer did not add up"),
                _("The provider described two different people in one sign-in. Try again."),
                status=400,
            )
        # auth_time only as the signed ID token says it: a confirmation is judged by it.
        claims = {**payload, **userinfo, "auth_time": payload.get("auth_time")}
        groups_claim = settings.OIDC_GROUPS_CLAIM
        if groups_claim:
            claims[groups_claim] = userinfo.get(groups_claim, payload.get(groups_claim))
        purpose = getattr(self.request, "oidc_purpose", SIGN_IN)
        user = person_for(
            claims,
            purpose=purpose,
            current_user=self.request.user,
            started_at=getattr(self.request, "oidc_started_at", None),
        )
        self.request.oidc_auth_time = payload.get("auth_time")
        return user


def person_for(claims, *, purpose, current_user, started_at=None, now=None):
    """Return the account of the person *claims* describe, after the rules of *purpose*; refresh it.

    Raise SignInRefused where the rules say no; then nothing is created or changed.
    """
    now = now or timezone.now()
    issuer, subject = settings.OIDC_ISSUER, claims["sub"]
    with transaction.atomic():
        identity = ProviderIdentity.objects.of(issuer=issuer, subject=subject)
        if purpose == CONFIRM:
            _check_confirmation(identity, claims, current_user=current_user, started_at=started_at)
        elif purpose == CONNECT:
            identity = _connect(identity, issuer=issuer, subject=subject, user=current_user, now=now)
        elif identity is None:
            user = provisioned_account_for(claims) or _new_account(claims)
            identity = _link(user=user, issuer=issuer, subject=subject, now=now)
        if is_service_account(identity.user):
            # No person's account at all (an administrator linked an identity to a service account):
            # nobody signs in as one, whatever the provider says.
            raise NOT_A_PERSON
        if not identity.user.is_active:
            # Switched off here: the provider's word changes nothing of it.
            raise SWITCHED_OFF
        refresh_from_claims(identity.user, claims)
        ProviderIdentity.objects.signed_in(identity, now=now)
    return identity.user


def _check_confirmation(identity, claims, *, current_user, started_at):
    if identity is None or not current_user.is_authenticated or identity.user_id != current_user.pk:
        raise SignInRefused(
            _("Signed in as someone else"),
            _(
                "The provider signed in a different person than the one signed in here. Sign out at the "
                "provider, then confirm again with your own account."
            ),
        )
    auth_time = claims.get("auth_time")
    # A confirmation must be a sign-in made now, not an old session at the provider waved through.
    if not isinstance(auth_time, int) or started_at is None or auth_time < started_at - LEEWAY:
        raise SignInRefused(
            _("The provider did not ask for your password again"),
            _(
                "Confirming needs a fresh sign-in at the provider, and it reused an earlier one. Try "
                "again; if this keeps happening, confirm with your password or ask an administrator."
            ),
        )


def _connect(identity, *, issuer, subject, user, now):
    if not user.is_authenticated:
        raise SignInRefused(_("Not signed in"), _("Sign in with your password first, then connect."))
    if identity is not None and identity.user_id != user.pk:
        raise SignInRefused(
            _("Already connected to another account"),
            _(
                "This provider account is already connected to another account here. Ask an "
                "administrator if it should be yours."
            ),
        )
    if identity is None:
        if ProviderIdentity.objects.filter(user=user, issuer=issuer).exists():
            raise SignInRefused(
                _("Another provider account is connected"),
                _(
                    "Your account here is already connected to a different account at the provider. "
                    "Ask an administrator to change it."
                ),
            )
        identity = _link(user=user, issuer=issuer, subject=subject, now=now)
    return identity


def _link(*, user, issuer, subject, now):
    try:
        with transaction.atomic():
            identity = ProviderIdentity.objects.link(user=user, issuer=issuer, subject=subject, now=now)
    except IntegrityError:
        # A second callback of the same person in parallel linked first: use what it linked.
        identity = ProviderIdentity.objects.of(issuer=issuer, subject=subject)
        if identity is None or identity.user_id != user.pk:
            raise
    identity.user = user
    return identity


SWITCHED_OFF = SignInRefused(
    _("You cannot sign in here"),
    _("Your account here is switched off. Ask an administrator if you need it back."),
)
NOT_A_PERSON = SignInRefused(
    _("You cannot sign in here"),
    _(
        "Your provider account is connected to a service account here, and nobody signs in as a service "
        "account. Ask an administrator to connect it to your own account."
    ),
)
COLLISION = SignInRefused(
    _("An account with your name already exists here"),
    _(
        "There is already an account here with your username or e-mail address that is not connected "
        "to your provider account, so nothing was created. If it is yours, sign in to it with your "
        "password and choose “Connect” on your profile; otherwise ask an administrator to connect it."
    ),
    status=409,
)


def _new_account(claims):
    """Create the account of a first provider sign-in; refuse when it collides with an unlinked account."""
    User = get_user_model()
    email = claims.get("email") if isinstance(claims.get("email"), str) else ""
    username = _username(claims)
    same = Q(username__iexact=username)
    if email:
        same |= Q(email__iexact=email)
    others = User.objects.filter(same)
    if others.filter(provider_identities__isnull=True).exists():
        raise COLLISION
    if others.filter(username__iexact=username).exists():
        # Taken by someone linked to another identity: keep theirs, make ours distinct.
        suffix = sha256(claims["sub"].encode()).hexdigest()[:8]
        username = f"{username[: USERNAME_MAX_LENGTH - 9]}-{suffix}"
    user = User(username=username)
    user.set_unusable_password()  # the provider is the way in
    user.save()
    return user


def _username(claims):
    for candidate in (claims.get("preferred_username"), claims.get("email"), claims["sub"]):
        if isinstance(candidate, str):
            cleaned = re.sub(r"[^\w.@+-]", "", candidate)[:USERNAME_MAX_LENGTH]
            if cleaned:
                return cleaned
    return "user-" + sha256(claims["sub"].encode()).hexdigest()[:16]


def claimed_groups(claims):
    """Return the group names of the groups claim (a list of strings, or one string), else []."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({name for name in value if isinstance(name, str) and name})


def refresh_from_claims(user, claims):
    """Bring *user*'s name, e-mail, groups, staff and superuser flags in step with the provider's *claims*.

    Groups are the Django groups named in the claim (none is created); a claim that is missing counts
    as no groups, so a group removed at the provider is removed here at the next sign-in, and with it
    whatever its permissions gave the person's tokens. With OIDC_GROUPS_CLAIM empty the provider
    manages no groups (Google sends none): they, and staff and superuser, are left as they are.
    """
    for field, claim in (("first_name", "given_name"), ("last_name", "family_name")):
        if isinstance(claims.get(claim), str):
            setattr(user, field, claims[claim][:150])
    # An address the provider has not verified is not one to send token notices to.
    if isinstance(claims.get("email"), str) and claims.get("email_verified") is not False:
        user.email = claims["email"][:254]
    if not settings.OIDC_GROUPS_CLAIM:
        user.save()  # groups, staff and superuser are kept in the portal, not by the provider
        return
    names = claimed_groups(claims)
    if settings.OIDC_SUPERUSER_GROUPS:
        user.is_superuser = bool(set(names) & set(settings.OIDC_SUPERUSER_GROUPS))
    if settings.OIDC_STAFF_GROUPS or settings.OIDC_SUPERUSER_GROUPS:
        user.is_staff = user.is_superuser or bool(set(names) & set(settings.OIDC_STAFF_GROUPS))
    user.save()
    user.groups.set(Group.objects.filter(name__in=names))


# --- the views --------------------------------------------------------------------------------------------


def _problem(request, title, message, status):
    return render(
        request,
        "registration/sign_in_problem.html",
        {"title": title, "message": message, "provider_name": settings.OIDC_PROVIDER_NAME},
        status=status,
    )


ProviderError = (provider.ProviderUnavailable, requests.ConnectionError, requests.Timeout)
UNREACHABLE = (
    _("The sign-in service cannot be reached"),
    _(
        "%(provider)s did not answer. Wait a minute and try again; if it keeps failing, tell your "
        "administrator."
    ),
)


def _unreachable(request):
    title, message = UNREACHABLE
    return _problem(request, title, message % {"provider": settings.OIDC_PROVIDER_NAME}, 503)


class StartView(OIDCAuthenticationRequestView):
    """Send the browser to the provider: GET /accounts/oidc/start/?next=…[&purpose=connect|confirm]."""

    get_settings = staticmethod(library_setting)

    def __init__(self, *args, **kwargs):
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.purpose = SIGN_IN

    OIDC_OP_AUTH_ENDPOINT = property(lambda self: provider.metadata().authorization_endpoint)
    OIDC_RP_CLIENT_ID = property(lambda self: settings.OIDC_CLIENT_ID)

    def get(self, request):
        if not provider.enabled():
            raise Http404
        wanted = request.GET.get("purpose")
        if wanted in (CONNECT, CONFIRM) and request.user.is_authenticated:
            self.purpose = wanted
        try:
            response = super().get(request)
        except ProviderError:
            return _unreachable(request)
        # The purpose travels with the state: a callback can only serve what its own attempt began.
        state = parse_qs(urlsplit(response.url).query)["state"][0]
        request.session["oidc_states"][state]["purpose"] = self.purpose
        request.session.modified = True
        return response

    def get_extra_params(self, request):
        if self.purpose == CONFIRM:
            # OpenID Connect Core 3.1.2.1: ask the person to sign in again, whatever session they have.
            return {"prompt": "login", "max_age": "0"}
        return {}


class CallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back: GET /accounts/oidc/callback/?code=…&state=…."""

    get_settings = staticmethod(library_setting)

    def get(self, request):
        if not provider.enabled():
            raise Http404
        state = request.GET.get("state")
        states = request.session.get("oidc_states")
        attempt = states.get(state) if isinstance(states, dict) and isinstance(state, str) else None
        if request.GET.get("error"):
            if attempt is not None:
                del states[state]  # used, even though it failed
                request.session.modified = True
            return self._provider_said_no(request, request.GET["error"])
        if attempt is None or "code" not in request.GET:
            return _problem(
                request,
                _("This sign-in link is not valid any more"),
                _(
                    "It was already used, has expired, or was not started in this browser. Start again "
                    "from the sign-in page."
                ),
                400,
            )
        request.oidc_purpose = attempt.get("purpose", SIGN_IN)
        request.oidc_started_at = attempt.get("added_on")
        try:
            return super().get(request)
        except SignInRefused as refusal:
            return _problem(request, refusal.title, refusal.message, refusal.status)
        except requests.HTTPError:
            # The token endpoint refused the code: expired (they live for minutes), or used already.
            return _problem(
                request,
                _("The sign-in took too long"),
                _("The provider no longer accepts this sign-in. Start again from the sign-in page."),
                400,
            )
        except (provider.ProviderUnavailable, requests.RequestException):
            # Unreachable, or an answer that is not what the protocol says (not JSON, cut short).
            return _unreachable(request)
        except SuspiciousOperation:
            logger.warning("provider sign-in refused: the ID token did not verify")
            return _problem(
                request,
                _("The sign-in could not be verified"),
                _("The provider's answer did not pass our checks, so you are not signed in. Start again."),
                400,
            )

    def _provider_said_no(self, request, error):
        if error in ("access_denied", "consent_required", "interaction_required", "login_required"):
            title = _("Sign-in was cancelled or refused")
            message = _(
                "%(provider)s did not sign you in: you cancelled, or you may not use this portal. Ask "
                "your administrator for access if you need it."
            )
        else:
            title = _("The sign-in service reported a problem")
            message = _("%(provider)s could not complete the sign-in. Try again in a minute.")
        return _problem(request, title, message % {"provider": settings.OIDC_PROVIDER_NAME}, 403)

    def login_failure(self):
        return _problem(
            self.request,
            _("The sign-in did not complete"),
            _(
                "The provider's answer could not be used. Start again; if it keeps failing, tell your "
                "administrator."
            ),
            400,
        )

    def login_success(self):
        response = super().login_success()
        auth_time = getattr(self.request, "oidc_auth_time", None)
        if self.request.oidc_purpose == CONFIRM:
            recent.stamp(self.request, auth_time)
        else:
            recent.stamp(self.request)
        if self.request.oidc_purpose == CONNECT:
            return HttpResponseRedirect(reverse("profile"))
        return response


@require_POST
@csrf_protect
def sign_out(request):
    """End the portal session; after a provider sign-in, end the provider's too (RP-initiated logout)."""
    id_token = request.session.get(ID_TOKEN)
    after = request.build_absolute_uri(reverse(settings.LOGOUT_REDIRECT_URL))
    target = reverse(settings.LOGOUT_REDIRECT_URL)
    if id_token and provider.enabled():
        try:
            end_session = provider.metadata().end_session_endpoint
        except provider.ProviderUnavailable:
            end_session = None
        # The sign-out form's redirect is allowed by the CSP's form-action to the issuer's origin only.
        if end_session and provider.origin(end_session) == provider.origin(settings.OIDC_ISSUER):
            query = urlencode(
                {
                    "id_token_hint": id_token,
                    "client_id": settings.OIDC_CLIENT_ID,
                    "post_logout_redirect_uri": after,
                }
            )
            target = f"{end_session}{'&' if '?' in end_session else '?'}{query}"
    auth.logout(request)
    response = HttpResponseRedirect(target)
    response.status_code = 303
    return response
