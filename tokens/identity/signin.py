"""The sign-in page, local passwords under PASSWORD_SIGN_IN, and the confirmation of a recent sign-in.

PASSWORD_SIGN_IN decides who may still use a local password: ``on`` everyone, ``staff`` staff and
superusers only (break-glass while the provider is down, e.g. the superuser ``ensure_admin`` made),
``off`` nobody. The rule is applied by the password backend, so it holds for every form that checks a
password (the site's, the admin's, the confirmation's), and for sessions: a password session of
someone the rule no longer allows ends at their next request.
"""

from django import forms
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from ..models import ProviderIdentity, is_service_account
from ..throttle import DeferredPasswordResetForm, ThrottledLoginView, count_sign_in, forget_sign_in
from . import provider, recent


def password_allowed(user):
    """Return True when *user* may sign in with a local password (or reset it).

    Never a service account, whatever password it holds; otherwise as PASSWORD_SIGN_IN says.
    """
    if is_service_account(user):
        return False
    mode = settings.PASSWORD_SIGN_IN
    return mode == "on" or (mode == "staff" and (user.is_staff or user.is_superuser))


class PasswordBackend(ModelBackend):
    """Django's username-and-password backend, for the people PASSWORD_SIGN_IN allows."""

    def user_can_authenticate(self, user):
        return super().user_can_authenticate(user) and password_allowed(user)


class StaffAwarePasswordResetForm(DeferredPasswordResetForm):
    """Mail reset links only to people who may use a password (``password_allowed``), after the answer."""

    def get_users(self, email):
        return (user for user in super().get_users(email) if password_allowed(user))


def organisation_sign_in(request):
    """Template context: whether provider sign-in is on, its name, and the person's linked identity."""
    user = getattr(request, "user", None)

    def identity():
        if not provider.enabled() or user is None or not user.is_authenticated:
            return None
        return ProviderIdentity.objects.filter(user=user, issuer=settings.OIDC_ISSUER).first()

    return {
        "oidc_enabled": provider.enabled(),
        "oidc_provider_name": settings.OIDC_PROVIDER_NAME,
        "password_sign_in": settings.PASSWORD_SIGN_IN,
        "organisation_identity": identity,
    }


def _passwords_off(request):
    return render(
        request,
        "registration/sign_in_problem.html",
        {
            "title": _("Passwords are not used here"),
            "message": _("Sign in with %(provider)s instead.") % {"provider": settings.OIDC_PROVIDER_NAME},
        },
        status=403,
    )


class SignInView(ThrottledLoginView):
    """The sign-in page: the provider's button first, the password form only where it is allowed."""

    def post(self, request, *args, **kwargs):
        # Refused before the form is read: no throttle count, no password hashed, nothing changed.
        if settings.PASSWORD_SIGN_IN == "off":
            return _passwords_off(request)
        return super().post(request, *args, **kwargs)


class ConfirmPasswordForm(forms.Form):
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password", "autofocus": True}),
    )

    def __init__(self, *args, request, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        self.retry_after = None

    def clean(self):
        username = self.request.user.get_username()
        # The same counts as the sign-in form: confirming is no way around its limits.
        self.retry_after = count_sign_in(self.request, username)
        if self.retry_after is not None:
            raise forms.ValidationError(_("Too many failed attempts. Try again later."), code="throttled")
        password = self.cleaned_data.get("password") or ""
        user = authenticate(self.request, username=username, password=password)
        if user is None or user.pk != self.request.user.pk:
            raise forms.ValidationError(_("That is not your password."), code="invalid")
        forget_sign_in(self.request, username)
        return self.cleaned_data


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
@sensitive_post_parameters("password")
def confirm(request):
    """Ask a person whose sign-in is older than SUDO_MINUTES to confirm, then let them finish their step."""
    if recent.signed_in_recently(request):
        step = recent.pending_step(request)
        if step is None:
            return redirect("profile")
        return render(request, "registration/confirm_continue.html", {"step": step})
    linked = (
        provider.enabled()
        and ProviderIdentity.objects.filter(user=request.user, issuer=settings.OIDC_ISSUER).exists()
    )
    by_password = password_allowed(request.user) and request.user.has_usable_password()
    form = ConfirmPasswordForm(request.POST or None, request=request) if by_password else None
    status = 200
    if request.method == "POST":
        if form is None:
            return _passwords_off(request)
        if form.is_valid():
            recent.stamp(request)
            response = HttpResponseRedirect(reverse("confirm-sign-in"))
            response.status_code = 303
            return response
        status = 429 if form.retry_after is not None else 400
    step = recent.pending_step(request, keep=True)
    return render(
        request,
        "registration/confirm.html",
        {"form": form, "linked": linked, "step": step, "minutes": settings.SUDO_MINUTES},
        status=status,
    )
