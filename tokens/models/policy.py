from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..constants import PRESET_CHOICES, PRESETS
from .events import TokenEvent


def describe_lifetime(delta):
    """Return *delta* in words people use for lifetimes: "1 year", "90 days", "12 hours", "5 minutes"."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    if days and days % 365 == 0 and not rest:
        return ngettext("%(n)d year", "%(n)d years", days // 365) % {"n": days // 365}
    if days and not rest:
        return ngettext("%(n)d day", "%(n)d days", days) % {"n": days}
    if minutes % 60 == 0:
        return ngettext("%(n)d hour", "%(n)d hours", minutes // 60) % {"n": minutes // 60}
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


def legacy_refusal(*, accepted, sunset_at, now=None):
    """Return why legacy keys are refused under these policy values, or None while they are accepted.

    The one rule for the API (which reads the values in its lookup) and the pages that describe it.
    """
    if not accepted:
        return _("Legacy API keys are switched off. Use a bearer token (Authorization: Bearer <token>).")
    if sunset_at is not None and (now or timezone.now()) >= sunset_at:
        return _("Legacy API keys reached their sunset. Use a bearer token (Authorization: Bearer <token>).")
    return None


def default_presets():
    return [key for key, _label, _delta in PRESET_CHOICES]


class ExpirationPolicy(models.Model):
    """The site's one expiration policy (pk=1). Every path that makes a token checks against it."""

    class NoExpiry(models.TextChoices):
        NOBODY = "nobody", _("Nobody")
        STAFF = "staff", _("Staff users only")
        EVERYONE = "everyone", _("Everyone")

    default_lifetime = models.DurationField(
        verbose_name=_("default lifetime"),
        default=timedelta(days=30),
        help_text=_("Preselected on the create form and used by the API when no expiry is given."),
    )
    minimum_lifetime = models.DurationField(
        verbose_name=_("minimum lifetime"),
        default=timedelta(minutes=5),
    )
    maximum_lifetime = models.DurationField(
        verbose_name=_("maximum lifetime"),
        default=timedelta(days=365),
        help_text=_("Existing tokens are not changed when this is lowered; the token list shows those that exceed it."),
    )
    no_expiry_allowed_for = models.CharField(
        verbose_name=_("tokens without expiry allowed for"),
        max_length=10,
        choices=NoExpiry.choices,
        default=NoExpiry.NOBODY,
    )
    presets = models.JSONField(
        verbose_name=_("expiry presets offered"),
        default=default_presets,
        help_text=_("Keys among: %(keys)s.") % {"keys": ", ".join(PRESETS)},
    )
    max_active_tokens = models.PositiveIntegerField(
        verbose_name=_("active tokens per user"),
        null=True,
        blank=True,
        help_text=_("Leave empty for no limit."),
    )
    bearer_can_create_tokens = models.BooleanField(
        verbose_name=_("bearer tokens may create tokens"),
        default=False,
        help_text=_("Off: POST /api/tokens needs a signed-in session, so a leaked token cannot mint more."),
    )
    expiry_notice_days = models.PositiveIntegerField(
        verbose_name=_("expiry notice (days)"),
        default=7,
        help_text=_("Owners are mailed once about tokens expiring within this many days."),
    )
    usage_retention_days = models.PositiveIntegerField(
        verbose_name=_("keep usage records (days)"),
        default=90,
        help_text=_("Older request records are pruned; per-day totals are kept."),
    )
    legacy_keys_accepted = models.BooleanField(
        verbose_name=_("legacy API keys accepted"),
        default=True,
    )
    legacy_deprecated_at = models.DateTimeField(
        verbose_name=_("legacy keys deprecated since"),
        default=timezone.now,
        help_text=_("Sent in the Deprecation header of every legacy-key response."),
    )
    legacy_sunset_at = models.DateTimeField(
        verbose_name=_("legacy keys sunset"),
        null=True,
        blank=True,
        help_text=_("From this moment legacy keys are refused. Sent in the Sunset header."),
    )
    new_address_alerts = models.BooleanField(
        verbose_name=_("new-address alerts"),
        default=True,
        help_text=_(
            "Mail owners when a token or legacy key is used from an address it was never used from "
            "(at most five mails a credential a day; owners can mute each token)."
        ),
    )
    updated_at = models.DateTimeField(
        verbose_name=_("updated at"),
        auto_now=True,
    )

    class Meta:
        verbose_name = _("expiration policy")
        verbose_name_plural = _("expiration policy")
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="expiration_policy_singleton"),
        ]

    def __str__(self):
        return str(_("Expiration policy"))

    @classmethod
    def load(cls):
        """Return the policy row, creating it with the defaults if it is missing."""
        policy, _created = cls.objects.get_or_create(pk=1)
        return policy

    def clean(self):
        errors = {}
        if self.minimum_lifetime <= timedelta(0):
            errors["minimum_lifetime"] = _("The minimum lifetime must be positive.")
        elif self.minimum_lifetime > self.maximum_lifetime:
            errors["maximum_lifetime"] = _("The maximum lifetime must not be shorter than the minimum.")
        elif not self.minimum_lifetime <= self.default_lifetime <= self.maximum_lifetime:
            errors["default_lifetime"] = _("The default lifetime must lie between the minimum and the maximum.")
        if not isinstance(self.presets, list) or any(key not in PRESETS for key in self.presets):
            errors["presets"] = _("Use a list of preset keys among: %(keys)s.") % {"keys": ", ".join(PRESETS)}
        elif any(not self.minimum_lifetime <= PRESETS[key] <= self.maximum_lifetime for key in self.presets):
            errors["presets"] = _("Every preset must lie between the minimum and the maximum lifetime.")
        if self.legacy_sunset_at and self.legacy_deprecated_at and self.legacy_sunset_at <= self.legacy_deprecated_at:
            errors["legacy_sunset_at"] = _("The sunset must come after the deprecation date.")
        if errors:
            raise ValidationError(errors)

    def record_change(self, *, actor, fields, ip=None):
        """Record that *actor* changed the policy's *fields* (names), as an event of the actor's own."""
        if not fields:
            return None
        return TokenEvent.objects.create(
            user=actor, actor=actor, kind=TokenEvent.Kind.POLICY_CHANGED, ip=ip,
            detail=", ".join(fields)[:255],
        )

    def default_expiry(self, now=None):
        """Return the expiry a new token gets when none is chosen: the default lifetime from *now*."""
        return (now or timezone.now()) + self.default_lifetime

    def allows_no_expiry(self, user):
        if self.no_expiry_allowed_for == self.NoExpiry.EVERYONE:
            return True
        return self.no_expiry_allowed_for == self.NoExpiry.STAFF and user.is_staff

    def preset_choices(self):
        """Return [(key, label, timedelta)] of the offered presets, in lifetime order."""
        return [(key, label, delta) for key, label, delta in PRESET_CHOICES if key in self.presets]

    def check_expiry(self, user, expires_at, now=None):
        """Raise ValidationError({"expires_at": …}) unless *expires_at* is allowed for *user*."""
        now = now or timezone.now()
        if expires_at is None:
            if not self.allows_no_expiry(user):
                raise ValidationError({"expires_at": _("Tokens without an expiry date are not allowed.")})
            return
        lifetime = expires_at - now
        if lifetime <= timedelta(0):
            raise ValidationError({"expires_at": _("The expiry must be in the future.")})
        # A minute of slack for the time between rendering the form and submitting it.
        if lifetime < self.minimum_lifetime - timedelta(minutes=1):
            raise ValidationError(
                {"expires_at": _("The shortest lifetime allowed is %(min)s.") % {"min": describe_lifetime(self.minimum_lifetime)}}
            )
        if lifetime > self.maximum_lifetime + timedelta(minutes=1):
            raise ValidationError(
                {"expires_at": _("The longest lifetime allowed is %(max)s.") % {"max": describe_lifetime(self.maximum_lifetime)}}
            )

    def legacy_refusal(self, now=None):
        """Return why legacy keys are refused now, or None while they are accepted."""
        return legacy_refusal(accepted=self.legacy_keys_accepted, sunset_at=self.legacy_sunset_at, now=now)
