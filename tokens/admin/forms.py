"""The admin's forms: the policy with its expiry presets, and adding or editing a token."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from ..constants import PRESET_CHOICES
from ..models import ExpirationPolicy, Token
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


class TokenAddForm(forms.ModelForm):
    """Owner, name, purpose and expiry; the token itself is made by ``Token.objects.issue``."""

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


class TokenChangeForm(forms.ModelForm):
    """Only the name and the purpose can change; the name follows the same rules as on the site."""

    class Meta:
        model = Token
        fields = ("name", "purpose")

    def clean(self):
        cleaned = super().clean()
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
