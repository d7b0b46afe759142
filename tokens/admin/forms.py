"""The admin's forms: the policy with its expiry presets, and adding or editing a token."""

from datetime import timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from ..constants import PRESET_CHOICES, Access
from ..models import SitePolicy, Token
from ..models.restrictions import clean_access, clean_allowed_ips, clean_permissions
from ..models.tokens import clean_name, clean_purpose

# The units a lifetime is entered in, largest first: a stored value is shown in the largest unit that
# divides it exactly ("365 days" reads "1 year", "90 minutes" stays "90 minutes").
LIFETIME_UNITS = (
    ("years", _("years"), timedelta(days=365)),
    ("days", _("days"), timedelta(days=1)),
    ("hours", _("hours"), timedelta(hours=1)),
    ("minutes", _("minutes"), timedelta(minutes=1)),
)
# Far beyond any sensible lifetime, and far inside what timedelta and the database can hold.


class LifetimeWidget(forms.MultiWidget):
    """A number and a unit ("30" "days") for a DurationField, instead of Django's "30 00:00:00"."""

    template_name = "django/forms/widgets/multiwidget.html"
    part_names = (_("number"), _("unit"))

    def __init__(self, attrs=None):
        number = forms.NumberInput(attrs={"min": "1", "step": "1", "class": "vIntegerField", **(attrs or {})})
        unit = forms.Select(choices=[(key, label) for key, label, _delta in LIFETIME_UNITS])
        super().__init__((number, unit), attrs)

    def decompress(self, value):
        if not isinstance(value, timedelta) or value <= timedelta(0):
            return [None, "days"]
        for key, _label, delta in LIFETIME_UNITS:
            if value % delta == timedelta(0):
                return [value // delta, key]
        # Seconds are not a unit here; a value in seconds is shown rounded down to whole minutes.
        return [value // timedelta(minutes=1), "minutes"]


class LifetimeField(forms.MultiValueField):
    """Enter a lifetime as a whole number of minutes, hours, days or years; clean to a timedelta."""

    widget = LifetimeWidget

    def __init__(self, **kwargs):
        kwargs.pop("max_length", None)  # passed by DurationField's formfield(); meaningless here
        fields = (
            # Whole numbers only: "²" (isdigit() but not int()), "1.5", "1e3" or a huge number is a form
            # error, never an exception or an overflow.
            forms.IntegerField(min_value=1, max_value=1_000_000),
            forms.ChoiceField(choices=[(key, label) for key, label, _delta in LIFETIME_UNITS]),
        )
        super().__init__(fields, require_all_fields=True, **kwargs)

    def compress(self, data_list):
        # No number: no lifetime (an optional field, e.g. the service accounts' maximum, left empty).
        if not data_list or data_list[0] is None:
            return None
        number, unit = data_list
        # A million of the largest unit still fits a timedelta; the policy's own clean() then refuses
        # anything past its longest lifetime, with the same message as everywhere else.
        return number * {key: delta for key, _label, delta in LIFETIME_UNITS}[unit]


class OverlapWidget(LifetimeWidget):
    """A lifetime widget that can show 0: no overlap at all."""

    def __init__(self, attrs=None):
        super().__init__(attrs)
        self.widgets[0].attrs["min"] = "0"

    def decompress(self, value):
        if value == timedelta(0):
            return [0, "hours"]
        return super().decompress(value)


class OverlapField(LifetimeField):
    """The longest rotation overlap: like a lifetime, but 0 (the old value stops at once) is allowed."""

    widget = OverlapWidget

    def __init__(self, **kwargs):
        kwargs.pop("max_length", None)
        fields = (
            forms.IntegerField(min_value=0, max_value=1_000_000),
            forms.ChoiceField(choices=[(key, label) for key, label, _delta in LIFETIME_UNITS]),
        )
        forms.MultiValueField.__init__(self, fields, require_all_fields=True, **kwargs)


class LabelledInputsMixin:
    """Give each part of a two-part widget (a lifetime's number and unit, a date and its time) a name.

    The parts share one <label> that points at neither, so a screen reader announced them as unnamed
    fields; each gets an ``aria-label`` from its field's label and what the part holds.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            widget = getattr(field.widget, "widget", field.widget)  # the admin wraps related fields
            parts = getattr(widget, "widgets", None)
            if parts:
                names = getattr(widget, "part_names", None)
                if names is None and isinstance(widget, forms.SplitDateTimeWidget):
                    names = (_("date"), _("time"))
                for part, name in zip(parts, names or (), strict=False):
                    part.attrs.setdefault("aria-label", f"{field.label}: {name}")


class BrownoutWindowForm(LabelledInputsMixin, forms.ModelForm):
    pass


class SitePolicyForm(LabelledInputsMixin, forms.ModelForm):
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
        model = SitePolicy
        fields = "__all__"  # noqa: DJ007 - every setting is the administrator's; a new one appears at once
        field_classes = {
            "default_lifetime": LifetimeField,
            "minimum_lifetime": LifetimeField,
            "maximum_lifetime": LifetimeField,
            "service_account_maximum_lifetime": LifetimeField,
            "max_rotation_overlap": OverlapField,
        }
        help_texts = {
            "default_lifetime": _(
                "Preselected on the create form and used by the API when no expiry is given."
            ),
            "minimum_lifetime": _("The shortest lifetime a token may be given."),
            "maximum_lifetime": _(
                "The longest lifetime a token may be given. Lowering it never changes existing tokens: "
                "they are listed below and in the token list, where they can be shortened."
            ),
            "no_expiry_allowed_for": _("Who may create a token that never expires."),
            "security_level": _(
                "High refuses every legacy API key at once (401 with the migration guide); Bearer only "
                "also refuses browser sessions on /api/. A passed sunset date means at least High."
            ),
            "rehearsal_level": _(
                "Rehearse a stricter level first: its refusals are served, and counted on the migration "
                "overview, so the switch is made on data."
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


class TokenAddForm(LabelledInputsMixin, RestrictionsAdminFields, forms.ModelForm):
    """Owner, name, purpose, expiry and limits; the token itself is made by ``Token.objects.issue``."""

    # One-time value: a resubmitted add form finds the first token instead of making a second.
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    class Meta:
        model = Token
        fields = ("user", "name", "purpose", "expires_at", "nonce")
        help_texts = {
            "expires_at": _("Must follow the site policy. Empty: never expires, where the policy allows it."),
        }

    # Who is adding: set by TokenAdmin.get_form. Only superusers may add a token for somebody else.
    requesting_user = None

    # Where issue()'s field errors go on this form.
    ERROR_FIELDS = {"permissions": "permissions_text", "allowed_ips": "allowed_ips_text", "__all__": None}

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("user")
        cleaned = self.clean_restrictions(cleaned, owner)
        if owner is None or self._errors:
            return cleaned
        if owner != self.requesting_user and not self.requesting_user.is_superuser:
            # The value acts as its owner, so making one for another user is acting as them; a superuser
            # can do anything already (and makes tokens for service accounts), other staff their own.
            self.add_error("user", _("Only superusers can create a token for another user."))
            # The owner widget prints the name of whatever user id it holds: show the caller's own, not
            # that of the id they sent.
            self.data = self.data.copy()
            self.data["user"] = str(self.requesting_user.pk)
            return cleaned
        if Token.objects.filter(user=owner, creation_nonce=cleaned.get("nonce")).exists():
            return cleaned  # submitted before: the add view points to the token it made
        try:
            Token.objects.check_issue(
                user=owner,
                name=cleaned.get("name"),
                purpose=cleaned.get("purpose"),
                expires_at=cleaned.get("expires_at"),
                access=cleaned.get("access"),
                permissions=cleaned.get("permissions"),
                allowed_ips=cleaned.get("allowed_ips"),
            )
        except ValidationError as error:
            for key, messages in error.message_dict.items():
                field = self.ERROR_FIELDS.get(key, key)
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


class TokenChangeForm(LabelledInputsMixin, RestrictionsAdminFields, forms.ModelForm):
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
