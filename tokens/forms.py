"""Forms of Profile > Integrations > Authorizations. They parse input; the model enforces the policy."""

import secrets
from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .constants import MAX_ALLOWED_IPS, NAME_MAX_LENGTH, OVERLAP_CHOICES, PURPOSE_MAX_LENGTH, Access
from .models.policy import describe_lifetime
from .models.restrictions import permission_choices

CUSTOM = "custom"
NEVER = "never"
SAME = "same"
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


def new_nonce():
    """Return a fresh one-time value for a create form (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


ALL_PERMISSIONS = "all"
ONLY_THESE = "only"


class ExpiryFields(forms.Form):
    """The expiry choice of the create and rotate forms: presets, a custom date and time, or none.

    The choices only offer what the policy allows, and the model checks the resulting date again, so a
    forged "never" or an out-of-bounds custom date is refused either way.
    """

    expiry = forms.ChoiceField(label=_("Expiration"), widget=forms.RadioSelect)
    custom_expiry = forms.DateTimeField(
        label=_("Custom date and time"),
        required=False,
        input_formats=[DATETIME_LOCAL, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL),
    )
    # One-time value: resubmitting this very form finds the token it made instead of making another.
    nonce = forms.RegexField(regex=r"^[A-Za-z0-9_-]{20,64}$", widget=forms.HiddenInput)

    custom_expiry_missing = _("Pick the date and time the token stops working.")

    def offer_expiries(self, *, policy, user, first=(), never=True, initial=None):
        """Offer *first*, the policy's presets, a custom date and "no expiry" where *user* may have it."""
        self.presets = {key: delta for key, _label, delta in policy.preset_choices()}
        choices = [*first, *((key, label) for key, label, _delta in policy.preset_choices())]
        choices.append((CUSTOM, _("Custom date and time")))
        if never and policy.allows_no_expiry(user):
            choices.append((NEVER, _("No expiry")))
        self.fields["expiry"].choices = choices
        self.fields["expiry"].initial = initial or choices[0][0]
        # Bounds for the browser's picker; the server checks them again whatever the browser sends.
        local_now = timezone.localtime(self.now)
        self.fields["custom_expiry"].widget.attrs.update(
            min=(local_now + policy.minimum_lifetime).strftime(DATETIME_LOCAL),
            max=(local_now + policy.maximum_lifetime_for(user)).strftime(DATETIME_LOCAL),
        )
        self.fields["custom_expiry"].help_text = _("Time zone: %(zone)s.") % {
            "zone": timezone.get_current_timezone_name()
        }
        self.fields["nonce"].initial = new_nonce()

    def clean(self):
        cleaned = super().clean()
        if (
            cleaned.get("expiry") == CUSTOM
            and cleaned.get("custom_expiry") is None
            and "custom_expiry" not in self.errors
        ):
            self.add_error("custom_expiry", self.custom_expiry_missing)
        return cleaned

    @property
    def expiry_error_field(self):
        """Return the field an expiry refusal belongs next to."""
        return "custom_expiry" if self.data.get("expiry") == CUSTOM else "expiry"

    def chosen_expiry(self):
        """Return the chosen expiry (None for "no expiry"); call after is_valid()."""
        choice = self.cleaned_data["expiry"]
        if choice == NEVER:
            return None
        if choice == CUSTOM:
            return self.cleaned_data["custom_expiry"]
        return self.now + self.presets[choice]


class RestrictionFields(forms.Form):
    """Access, permissions and allowed addresses: shared by the create form and the token page.

    The form only parses; ``Token.objects.issue`` and ``Token.set_restrictions`` check the values
    against the owner's permissions and the policy, whatever a forged form sends.
    """

    # Not required: a form posted without them (an older page, a script) gets the policy's default
    # access and all of the owner's permissions, as before these fields existed.
    access = forms.ChoiceField(
        label=_("Access"), choices=Access.choices, widget=forms.RadioSelect, required=False
    )
    permission_scope = forms.ChoiceField(
        label=_("Permissions"),
        choices=[
            (ALL_PERMISSIONS, _("All my permissions")),
            (ONLY_THESE, _("Only these")),
        ],
        initial=ALL_PERMISSIONS,
        widget=forms.RadioSelect,
        required=False,
    )
    permissions = forms.MultipleChoiceField(
        label=_("Permissions this token may use"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    allowed_ips = forms.CharField(
        label=_("Allowed addresses"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocapitalize": "off"}),
        help_text=_(
            "One IPv4 or IPv6 address or network per line, e.g. 203.0.113.7 or 2001:db8::/32. "
            "Empty: any address. At most %(n)d."
        )
        % {"n": MAX_ALLOWED_IPS},
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["permissions"].choices = permission_choices(user)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("permission_scope") != ONLY_THESE:
            cleaned["permissions"] = None
        lines = cleaned.get("allowed_ips", "").splitlines()
        cleaned["allowed_ips"] = [line.strip() for line in lines if line.strip()]
        return cleaned

    def restrictions(self):
        """Return the access, permissions and allowed_ips keyword arguments; call after is_valid()."""
        given = {key: self.cleaned_data[key] for key in ("permissions", "allowed_ips")}
        if self.cleaned_data.get("access"):
            given["access"] = self.cleaned_data["access"]
        return given

    def add_restriction_errors(self, error: ValidationError):
        """Put errors of ``issue``/``set_restrictions`` next to the fields they concern; return the rest."""
        rest = {}
        for key, messages in error.message_dict.items():
            if key in ("access", "permissions", "allowed_ips"):
                self.add_error(key, messages)
            else:
                rest[key] = messages
        return rest


class TokenCreateForm(ExpiryFields, RestrictionFields, forms.Form):
    """Name, purpose, an expiry choice built from the site policy for this user, and the restrictions."""

    name = forms.CharField(
        label=_("Name"),
        max_length=NAME_MAX_LENGTH,
        help_text=_("What uses it, so you can tell your tokens apart, e.g. “Backup script on nas01”."),
    )
    purpose = forms.CharField(
        label=_("Purpose"),
        required=False,
        max_length=PURPOSE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Optional. A note for yourself and your administrators."),
    )

    field_order = (
        "name",
        "purpose",
        "expiry",
        "custom_expiry",
        "access",
        "permission_scope",
        "permissions",
        "allowed_ips",
        "nonce",
    )

    def __init__(self, *args, user, policy, now=None, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        self.fields["access"].initial = policy.default_access
        self.now = now or timezone.now()
        presets = policy.preset_choices()
        default = next((key for key, _label, delta in presets if delta == policy.default_lifetime), None)
        self.offer_expiries(policy=policy, user=user, initial=default or CUSTOM)
        if default is None:
            self.fields["custom_expiry"].initial = policy.default_expiry(timezone.localtime(self.now))

    def expires_at(self):
        """Return the chosen expiry (None for "no expiry"); call after is_valid()."""
        return self.chosen_expiry()

    def add_model_errors(self, error: ValidationError):
        """Put the field errors of ``Token.objects.issue`` next to the fields they concern."""
        fields = {"name": "name", "purpose": "purpose", "expires_at": self.expiry_error_field}
        for key, messages in self.add_restriction_errors(error).items():
            self.add_error(fields.get(key), messages)


class TokenRestrictionsForm(RestrictionFields):
    """The token page's edit form for what a token may do, filled in from the token."""

    def __init__(self, *args, token, **kwargs):
        kwargs.setdefault(
            "initial",
            {
                "access": token.access,
                "permission_scope": ALL_PERMISSIONS if token.permissions is None else ONLY_THESE,
                "permissions": token.permissions or [],
                "allowed_ips": "\n".join(token.allowed_ips),
            },
        )
        super().__init__(*args, user=token.user, **kwargs)
        # A permission the owner has lost since is not offered again: saving drops it, which changes
        # nothing the token can do (it has only what the owner holds).


class TokenRotateForm(ExpiryFields, forms.Form):
    """Rotate: how long the old value keeps working, and the new token's expiry (same lifetime by default).

    The overlaps offered are those within the policy's longest; ``Token.rotate`` checks the overlap
    and the expiry again, whatever a forged form sends.
    """

    overlap = forms.ChoiceField(label=_("Old value keeps working for"), widget=forms.RadioSelect)

    field_order = ("overlap", "expiry", "custom_expiry", "nonce")
    custom_expiry_missing = _("Pick the date and time the new token stops working.")

    def __init__(self, *args, token, policy, now=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = now or timezone.now()
        longest = policy.max_rotation_overlap
        self.overlaps = {key: delta for key, _label, delta in OVERLAP_CHOICES if delta <= longest}
        self.fields["overlap"].choices = [
            (key, label) for key, label, delta in OVERLAP_CHOICES if key in self.overlaps
        ]
        self.fields["overlap"].initial = "1d" if "1d" in self.overlaps else "none"
        self.fields["expiry"].label = _("New token expires")
        if token.expires_at is None:
            same = _("The same as now: no expiry") if policy.allows_no_expiry(token.user) else None
        else:
            # To the nearest minute: an expiry computed a moment before the row's creation time is
            # still "30 days", not "43199 minutes".
            minutes = round((token.expires_at - token.created_at).total_seconds() / 60)
            same = _("The same lifetime as now: %(lifetime)s") % {
                "lifetime": describe_lifetime(timedelta(minutes=max(minutes, 1)))
            }
        # "No expiry" is offered as such only to a token that has an expiry today.
        self.offer_expiries(
            policy=policy,
            user=token.user,
            first=[(SAME, same)] if same else [],
            never=token.expires_at is not None,
        )

    def rotation(self):
        """Return the keyword arguments of ``Token.rotate`` (overlap, expiry if chosen); after is_valid()."""
        given = {
            "overlap": self.overlaps[self.cleaned_data["overlap"]],
            "now": self.now,
            "nonce": self.cleaned_data["nonce"],
        }
        if self.cleaned_data["expiry"] != SAME:
            given["expires_at"] = self.chosen_expiry()
        return given

    def add_model_errors(self, error: ValidationError):
        """Put the errors of ``Token.rotate`` next to the fields they concern."""
        fields = {"overlap": "overlap", "expires_at": self.expiry_error_field}
        for key, messages in error.message_dict.items():
            self.add_error(fields.get(key), messages)


class TokenRenameForm(forms.Form):
    name = forms.CharField(label=_("New name"), max_length=NAME_MAX_LENGTH)

    def add_model_errors(self, error: ValidationError):
        for key, messages in error.message_dict.items():
            self.add_error("name" if key == "name" else None, messages)
