"""The admin's forms: the policy with its expiry presets, and adding or editing a token."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from ..constants import PRESET_CHOICES, Access
from ..models import ExpirationPolicy, Token
from ..models.restrictions import clean_access, clean_allowed_ips, clean_permissions
from ..models.tokens import clean_name, clean_purpose

DURATION_HELP = _('Days and time, for example "30 00:00:00" for 30 days or "0 00:05:00" for 5 minutes.')


class ExpirationPolicyForm(forms.ModelForm):
    presets = forms.MultipleChoiceField(
        label=_("Expiry presets offered"),
        choices=[(key, label) for key, label, _delta in PRESET_CHOICES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=_(
            "Offered on the create form. Each must lie between the minimum and the maximum lifetime."
        ),
    )

    class Meta:
        model = ExpirationPolicy
        fields = "__all__"
        help_texts = {
            "default_lifetime": _(
                "Preselected on the create form and used by the API when no expiry is given. "
            )
            + DURATION_HELP,
            "minimum_lifetime": _("The shortest lifetime a token may be given. ") + DURATION_HELP,
            "maximum_lifetime": _(
                "The longest lifetime a token may be given. Lowering it never changes existing tokens: "
                "they are listed below and in the token list, where they can be shortened. "
            )
            + DURATION_HELP,
            "no_expiry_allowed_for": _("Who may create a token that never expires."),
            "legacy_keys_accepted": _(
                "Off: every legacy API key is refused at once with a message to use a bearer token."
            ),
        }


def _lines(text):
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


class RestrictionsAdminFields(forms.Form):
    """Access, permissions and allowed addresses as an administrator types them, one entry per line.

    Checked with the same cleaners as ``issue`` and ``set_restrictions`` against the token's owner:
    a superuser acting for somebody cannot give a token more than that person holds.
    """

    access = forms.ChoiceField(
        label=_("Access"), choices=[("", _("The policy's default")), *Access.choices], required=False
    )
    permissions_text = forms.CharField(
        label=_("Permissions"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One “app_label.codename” per line, each held by the owner. Empty: all of the owner's."),
    )
    allowed_ips_text = forms.CharField(
        label=_("Allowed client addresses"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One IPv4/IPv6 address or network per line. Empty: any address."),
    )

    def clean_restrictions(self, cleaned, owner, only=None):
        """Check the restriction fields (or those in *only*) for *owner*; put errors next to their fields."""
        def permissions():
            # No owner chosen yet (its own error is on the form): nothing to check against.
            if owner is None:
                return None
            return clean_permissions(owner, _lines(cleaned.get("permissions_text")) or None)

        def addresses():
            return clean_allowed_ips(_lines(cleaned.get("allowed_ips_text")))

        checks = (
            ("access", "access", lambda: clean_access(cleaned["access"]) if cleaned.get("access") else None),
            ("permissions_text", "permissions", permissions),
            ("allowed_ips_text", "allowed_ips", addresses),
        )
        for field, key, check in checks:
            if only is not None and field not in only:
                continue
            try:
                cleaned[key] = check()
            except ValidationError as error:
                self.add_error(field, error.message_dict[key])
        return cleaned


class TokenAddForm(RestrictionsAdminFields, forms.ModelForm):
    """Owner, name, purpose, expiry and limits; the token itself is made by ``Token.objects.issue``."""

    # One-time value: a resubmitted add form finds the first token instead of making a second.
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    class Meta:
        model = Token
        fields = ("user", "name", "purpose", "expires_at", "nonce")
        help_texts = {
            "expires_at": _(
                "Must follow the expiration policy. Empty: never expires, where the policy allows it."
            ),
        }

    def clean(self):
        cleaned = super().clean()
        return self.clean_restrictions(cleaned, cleaned.get("user"))


class TokenChangeForm(RestrictionsAdminFields, forms.ModelForm):
    """The name, the purpose and the limits can change; each follows the same rules as on the site."""

    class Meta:
        model = Token
        fields = ("name", "purpose")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        token = self.instance
        self.fields["access"].choices = Access.choices
        self.initial.update(
            access=token.access,
            permissions_text="\n".join(token.permissions or []),
            allowed_ips_text="\n".join(token.allowed_ips or []),
        )

    def restriction_changes(self):
        """Return the limits the administrator changed, as keyword arguments for ``set_restrictions``."""
        fields = {"access": "access", "permissions_text": "permissions", "allowed_ips_text": "allowed_ips"}
        return {key: self.cleaned_data[key] for field, key in fields.items() if field in self.changed_data}

    # Set per request by TokenAdmin.get_form: changing another user's limits is acting as them.
    may_change_limits = False

    def clean(self):
        cleaned = super().clean()
        changed = [f for f in ("access", "permissions_text", "allowed_ips_text") if f in self.changed_data]
        if changed and not self.may_change_limits:
            for field in changed:
                self.add_error(field, _("Only superusers can change the limits of another user's token."))
        elif changed:
            cleaned = self.clean_restrictions(cleaned, self.instance.user, only=changed)
        try:
            if "name" in self.changed_data:
                cleaned["name"] = clean_name(cleaned.get("name"))
                Token.objects.check_name_free(
                    user_id=self.instance.user_id, name=cleaned["name"], exclude_pk=self.instance.pk
                )
            if "purpose" in self.changed_data:
                cleaned["purpose"] = clean_purpose(cleaned.get("purpose"))
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned
