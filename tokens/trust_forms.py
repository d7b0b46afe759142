"""The trust policy form of Profile › Integrations › Keyless CI (server-rendered, no script needed).

The form only parses: ``TrustPolicy.objects.check_fields`` decides what is allowed, whatever a forged
form sends.
"""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .constants import NAME_MAX_LENGTH
from .forms import ALL_PERMISSIONS, ONLY_THESE, RestrictionFields
from .issuers import issuer_label
from .models.federation import (
    DEFAULT_MAX_LIVE_TOKENS,
    DEFAULT_TOKEN_LIFETIME,
    MAX_LIVE_TOKENS_LIMIT,
    PINNING_CLAIMS,
)

EXAMPLE_CONDITIONS = "repository = my-org/my-repo\nref = refs/heads/main"


def parse_conditions(text):
    """Return {claim: pattern} from lines ``claim = pattern``; raise ValidationError for a line without =."""
    conditions = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        claim, equals, pattern = line.partition("=")
        if not equals:
            raise ValidationError(
                _("Line %(n)d: write “claim = value”, e.g. repository = my-org/my-repo.") % {"n": number}
            )
        conditions[claim.strip()] = pattern.strip()
    return conditions


def format_conditions(conditions):
    return "\n".join(f"{claim} = {pattern}" for claim, pattern in conditions.items())


class TrustPolicyForm(RestrictionFields, forms.Form):
    name = forms.CharField(label=_("Name"), max_length=NAME_MAX_LENGTH)
    issuer = forms.ChoiceField(
        label=_("Issuer"), help_text=_("The CI service whose jobs this policy trusts.")
    )
    audience = forms.CharField(
        label=_("Audience"),
        max_length=255,
        help_text=_(
            "What the job asks its CI for as the token's audience (aud). Usually this portal's address."
        ),
    )
    conditions = forms.CharField(
        label=_("Conditions"),
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false", "autocapitalize": "off"}),
        help_text=_(
            "One “claim = value” per line; every line must hold. A value is exact, or a glob with * and ?. "
            "One line must pin the repository or project (%(claims)s) without starting with a wildcard."
        )
        % {"claims": ", ".join(PINNING_CLAIMS)},
    )
    token_lifetime = forms.IntegerField(
        label=_("Token lifetime (minutes)"),
        min_value=1,
        max_value=60,
        help_text=_("How long each minted token works: at most an hour."),
    )
    max_live_tokens = forms.IntegerField(
        label=_("Most live tokens"),
        min_value=1,
        max_value=MAX_LIVE_TOKENS_LIMIT,
        help_text=_("Further exchanges are refused while this many minted tokens still work."),
    )

    def __init__(self, *args, user, policy=None, default_access=None, **kwargs):
        if policy is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": policy.name,
                    "issuer": policy.issuer,
                    "audience": policy.audience,
                    "conditions": format_conditions(policy.conditions),
                    "access": policy.access,
                    "permission_scope": ONLY_THESE if policy.permissions is not None else ALL_PERMISSIONS,
                    "permissions": policy.permissions or [],
                    "allowed_ips": "\n".join(policy.allowed_ips),
                    "token_lifetime": policy.token_lifetime // 60,
                    "max_live_tokens": policy.max_live_tokens,
                },
            )
        else:
            kwargs.setdefault(
                "initial",
                {
                    "audience": settings.SITE_URL,
                    "conditions": EXAMPLE_CONDITIONS,
                    "access": default_access,
                    "token_lifetime": int(DEFAULT_TOKEN_LIFETIME.total_seconds()) // 60,
                    "max_live_tokens": DEFAULT_MAX_LIVE_TOKENS,
                },
            )
        super().__init__(*args, user=user, **kwargs)
        issuers = list(settings.OIDC_FEDERATION_ISSUERS)
        if policy is not None and policy.issuer not in issuers:
            issuers.append(policy.issuer)  # shown as it is; saving it is refused with a reason
        self.fields["issuer"].choices = [(url, issuer_label(url)) for url in issuers]
        self.fields["access"].required = True

    def clean_conditions(self):
        return parse_conditions(self.cleaned_data["conditions"])

    def policy_fields(self):
        """Return the keyword arguments of ``create_policy`` and ``TrustPolicy.update`` (after is_valid())."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "issuer": data["issuer"],
            "audience": data["audience"],
            "conditions": data["conditions"],
            "token_lifetime": data["token_lifetime"] * 60,
            "max_live_tokens": data["max_live_tokens"],
            **self.restrictions(),
        }

    def add_model_errors(self, error: ValidationError):
        for key, messages in error.message_dict.items():
            self.add_error(key if key in self.fields else None, messages)
