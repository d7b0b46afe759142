"""The site policy, one row: token lifetimes, rotation overlaps, usage retention and the legacy-key cutover.

Every path that makes or changes a token reads it (``load()``). The cutover's brownout windows and the
record of requests its rehearsal would refuse are here too, with the rule that decides each request
(``cutover_verdict``). Its own module because it is site configuration an administrator
edits, not a credential: the token and legacy-key modules import it, it imports neither.
"""

from dataclasses import dataclass
from datetime import UTC, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..constants import (
    DEFAULT_MAX_ROTATION_OVERLAP,
    PATH_MAX_LENGTH,
    PRESET_CHOICES,
    PRESETS,
    USER_AGENT_MAX_LENGTH,
    Access,
    Method,
)
from .events import TokenEvent
from .service_accounts import is_service_account
from .usage import storable

# Far beyond any sensible token and far below what dates can hold: year 9999 is datetime's last, so a
# lifetime of millions of days would make "now + maximum" overflow wherever the policy is applied.
LONGEST_LIFETIME = timedelta(days=100 * 365)


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


class SecurityLevel(models.TextChoices):
    """Which credentials reach the API, from the most to the least permissive (the vendor's three levels)."""

    COMPATIBILITY = "compatibility", _("Compatibility: bearer tokens, legacy keys and browser sessions")
    HIGH = "high", _("High: bearer tokens and browser sessions; legacy keys refused")
    BEARER_ONLY = "bearer_only", _("Bearer only: bearer tokens; legacy keys and browser sessions refused")


class RehearsalLevel(models.TextChoices):
    NONE = "none", _("No rehearsal")
    HIGH = "high", _("Rehearse High (count legacy-key requests)")
    BEARER_ONLY = "bearer_only", _("Rehearse Bearer only (count legacy-key and session requests)")


# Strictness order of the levels; "none" rehearses nothing.
_RANK = {"none": 0, SecurityLevel.COMPATIBILITY: 0, SecurityLevel.HIGH: 1, SecurityLevel.BEARER_ONLY: 2}
# The least strict level that refuses each method; bearer tokens are never refused by a level.
_REFUSED_FROM = {Method.LEGACY_KEY: 1, Method.SESSION: 2}


@dataclass(frozen=True)
class Verdict:
    """What the cutover rules say about one request: refused (with the reason), or admitted, perhaps
    with a note that the rehearsed level would have refused it."""

    refusal: str | None = None
    would_refuse: bool = False


def effective_level(*, security_level, sunset_at, now):
    """Return the level in force at *now*: a passed sunset means at least ``high``."""
    if sunset_at is not None and now >= sunset_at and _RANK[security_level] < _RANK[SecurityLevel.HIGH]:
        return SecurityLevel.HIGH
    return security_level


def cutover_verdict(*, method, security_level, rehearsal_level, sunset_at, brownout_ends_at, now):
    """Return the Verdict for a request authenticated by *method* (a ``Method``).

    The one rule for the API (which reads the values in its lookup: the policy row and the end of the
    brownout window open at *now*, if any) and the pages that describe it. Pure: no query, no clock.
    """
    rank = _REFUSED_FROM.get(method)
    if rank is None:
        return Verdict()
    level = effective_level(security_level=security_level, sunset_at=sunset_at, now=now)
    if _RANK[level] >= rank:
        if method == Method.SESSION:
            return Verdict(
                _(
                    "This API needs a bearer token (Authorization: Bearer <token>); "
                    "browser sessions are not accepted."
                )
            )
        if sunset_at is not None and now >= sunset_at:
            return Verdict(
                _("Legacy API keys reached their sunset. Use a bearer token (Authorization: Bearer <token>).")
            )
        return Verdict(
            _("Legacy API keys are switched off. Use a bearer token (Authorization: Bearer <token>).")
        )
    if method == Method.LEGACY_KEY and brownout_ends_at is not None:
        # Scheduled brownout: refused as under "high", with the two dates the client's owner needs.
        final = (
            _("They stop for good at %(at)s.") % {"at": _utc(sunset_at)}
            if sunset_at is not None
            else _("The date they stop for good is not set yet.")
        )
        return Verdict(
            _(
                "Legacy API keys are refused during a scheduled brownout until %(end)s. %(final)s "
                "Use a bearer token (Authorization: Bearer <token>)."
            )
            % {"end": _utc(brownout_ends_at), "final": final}
        )
    return Verdict(would_refuse=_RANK[rehearsal_level] >= rank)


def _utc(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_presets():
    return [key for key, _label, _delta in PRESET_CHOICES]


class SitePolicy(models.Model):
    """The site's one policy row (pk=1): every setting an administrator chooses for the whole portal.

    Token lifetimes and presets, the active-token cap, the security level and its rehearsal, the legacy
    keys' deprecation and sunset, default access, rotation, new-address alerts, usage retention and
    service accounts' lifetimes. Every path that makes or checks a credential reads it.
    """

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
        help_text=_(
            "Existing tokens are not changed when this is lowered; the token list shows those that exceed it."
        ),
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
    security_level = models.CharField(
        verbose_name=_("security level"),
        max_length=20,
        choices=SecurityLevel.choices,
        default=SecurityLevel.COMPATIBILITY,
        help_text=_("Which credentials reach the API. Raising it takes effect on the very next request."),
    )
    rehearsal_level = models.CharField(
        verbose_name=_("rehearsal"),
        max_length=20,
        choices=RehearsalLevel.choices,
        default=RehearsalLevel.NONE,
        help_text=_(
            "Requests this level would refuse are still served, and counted on the migration overview."
        ),
    )
    rehearsal_started_at = models.DateTimeField(
        verbose_name=_("rehearsal started at"),
        null=True,
        blank=True,
        editable=False,
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
    default_access = models.CharField(
        verbose_name=_("default access of new tokens"),
        max_length=10,
        choices=Access.choices,
        default=Access.READ_WRITE,
        help_text=_("Preselected on the create form; used by the API and create_token when none is given."),
    )
    require_allowed_ips_without_expiry = models.BooleanField(
        verbose_name=_("tokens without expiry need an address allow-list"),
        default=False,
        help_text=_("On: a token that never expires must name the addresses it may be used from."),
    )
    new_address_alerts = models.BooleanField(
        verbose_name=_("new-address alerts"),
        default=True,
        help_text=_(
            "Mail owners when a token or legacy key is used from an address it was never used from "
            "(at most five mails a credential a day; owners can mute each token)."
        ),
    )
    max_rotation_overlap = models.DurationField(
        verbose_name=_("longest rotation overlap"),
        default=DEFAULT_MAX_ROTATION_OVERLAP,
        help_text=_(
            "How long a rotated token's old value may keep working beside the new one. 0: it stops at once."
        ),
    )
    self_rotation_allowed = models.BooleanField(
        verbose_name=_("tokens may rotate themselves"),
        default=True,
        help_text=_(
            "On: POST /api/tokens/self/rotate lets a read-and-write token replace its own value "
            "(recorded with the caller's address and mailed to the owner)."
        ),
    )
    service_account_maximum_lifetime = models.DurationField(
        verbose_name=_("maximum lifetime of service-account tokens"),
        null=True,
        blank=True,
        help_text=_(
            "Service accounts' integrations often run for longer than a person's script. Empty: the "
            "maximum lifetime above."
        ),
    )
    service_account_no_expiry = models.BooleanField(
        verbose_name=_("service-account tokens may have no expiry"),
        default=False,
        help_text=_(
            "Only with an address allow-list: a service-account token that never expires must name "
            "the addresses it is used from."
        ),
    )
    updated_at = models.DateTimeField(
        verbose_name=_("updated at"),
        auto_now=True,
    )

    class Meta:
        verbose_name = _("site policy")
        verbose_name_plural = _("site policy")
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="site_policy_singleton"),
        ]

    def __str__(self):
        return str(_("Site policy"))

    def save(self, *args, **kwargs):
        # The rehearsal's numbers count from the moment the rehearsed level last changed.
        if self.pk is not None:
            previous = type(self).objects.filter(pk=self.pk).values_list("rehearsal_level", flat=True).first()
            if previous is not None and previous != self.rehearsal_level:
                rehearsing = self.rehearsal_level != RehearsalLevel.NONE
                self.rehearsal_started_at = timezone.now() if rehearsing else None
        super().save(*args, **kwargs)

    @classmethod
    def load(cls):
        """Return the policy row, creating it with the defaults if it is missing."""
        policy, _created = cls.objects.get_or_create(pk=1)
        return policy

    def clean(self):
        errors = {}
        too_long = [
            name
            for name in ("default_lifetime", "minimum_lifetime", "maximum_lifetime")
            if getattr(self, name) > LONGEST_LIFETIME
        ]
        if too_long:
            message = _("A lifetime can be at most %(max)s.") % {"max": describe_lifetime(LONGEST_LIFETIME)}
            raise ValidationError(dict.fromkeys(too_long, message))
        if self.minimum_lifetime <= timedelta(0):
            errors["minimum_lifetime"] = _("The minimum lifetime must be positive.")
        elif self.minimum_lifetime > self.maximum_lifetime:
            errors["maximum_lifetime"] = _("The maximum lifetime must not be shorter than the minimum.")
        elif not self.minimum_lifetime <= self.default_lifetime <= self.maximum_lifetime:
            errors["default_lifetime"] = _(
                "The default lifetime must lie between the minimum and the maximum."
            )
        longest_for_accounts = self.service_account_maximum_lifetime
        if longest_for_accounts is not None and not (
            self.minimum_lifetime <= longest_for_accounts <= LONGEST_LIFETIME
        ):
            errors["service_account_maximum_lifetime"] = _(
                "Use a lifetime from the minimum lifetime up to %(max)s, or leave it empty."
            ) % {"max": describe_lifetime(LONGEST_LIFETIME)}
        if not timedelta(0) <= self.max_rotation_overlap <= LONGEST_LIFETIME:
            errors["max_rotation_overlap"] = _("Use a duration from 0 up to %(max)s.") % {
                "max": describe_lifetime(LONGEST_LIFETIME)
            }
        if not isinstance(self.presets, list) or any(key not in PRESETS for key in self.presets):
            errors["presets"] = _("Use a list of preset keys among: %(keys)s.") % {"keys": ", ".join(PRESETS)}
        elif any(not self.minimum_lifetime <= PRESETS[key] <= self.maximum_lifetime for key in self.presets):
            errors["presets"] = _("Every preset must lie between the minimum and the maximum lifetime.")
        if (
            self.legacy_sunset_at
            and self.legacy_deprecated_at
            and self.legacy_sunset_at <= self.legacy_deprecated_at
        ):
            errors["legacy_sunset_at"] = _("The sunset must come after the deprecation date.")
        if errors:
            raise ValidationError(errors)

    # Audited each with its own event kind and old and new values (record_transition_changes).
    TRANSITION_FIELDS = ("security_level", "rehearsal_level", "legacy_sunset_at")

    def record_change(self, *, actor, fields, ip=None):
        """Record that *actor* changed the policy's *fields* (names), as an event of the actor's own.

        The transition's own fields are left to ``record_transition_changes``, which says more.
        """
        fields = [name for name in fields if name not in self.TRANSITION_FIELDS]
        if not fields:
            return None
        return TokenEvent.objects.create(
            user=actor,
            actor=actor,
            kind=TokenEvent.Kind.POLICY_CHANGED,
            ip=ip,
            detail=", ".join(fields)[:255],
        )

    def default_expiry(self, now=None):
        """Return the expiry a new token gets when none is chosen: the default lifetime from *now*."""
        return (now or timezone.now()) + self.default_lifetime

    def allows_no_expiry(self, user):
        if is_service_account(user):
            # Then only with an address allow-list (check_allowed_ips).
            return self.service_account_no_expiry
        if self.no_expiry_allowed_for == self.NoExpiry.EVERYONE:
            return True
        return self.no_expiry_allowed_for == self.NoExpiry.STAFF and user.is_staff

    def maximum_lifetime_for(self, user):
        """Return the longest lifetime a token of *user* may have: service accounts may have their own."""
        if self.service_account_maximum_lifetime is not None and is_service_account(user):
            return self.service_account_maximum_lifetime
        return self.maximum_lifetime

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
                {
                    "expires_at": _("The shortest lifetime allowed is %(min)s.")
                    % {"min": describe_lifetime(self.minimum_lifetime)}
                }
            )
        maximum = self.maximum_lifetime_for(user)
        if lifetime > maximum + timedelta(minutes=1):
            raise ValidationError(
                {
                    "expires_at": _("The longest lifetime allowed is %(max)s.")
                    % {"max": describe_lifetime(maximum)}
                }
            )

    def check_overlap(self, overlap):
        """Raise ValidationError({"overlap": …}) unless *overlap* (a timedelta) is allowed for a rotation."""
        if overlap < timedelta(0):
            raise ValidationError({"overlap": _("The overlap cannot be negative.")})
        if overlap > self.max_rotation_overlap:
            longest = describe_lifetime(self.max_rotation_overlap) if self.max_rotation_overlap else _("none")
            message = _("The longest overlap allowed is %(max)s.") % {"max": longest}
            raise ValidationError({"overlap": message})

    def rotation_expiry(self, user, lifetime, now=None):
        """Return the expiry of a rotated token whose predecessor lived *lifetime* (None: no expiry).

        The same lifetime from *now*, brought within today's policy: a lifetime the policy no longer
        allows becomes the nearest one it does, so a rotation never fails for a rule made later.
        """
        now = now or timezone.now()
        if lifetime is None:
            return None if self.allows_no_expiry(user) else now + self.maximum_lifetime_for(user)
        return now + min(max(lifetime, self.minimum_lifetime), self.maximum_lifetime_for(user))

    def check_allowed_ips(self, expires_at, allowed_ips, user=None):
        """Raise ValidationError({"allowed_ips": …}) if the policy needs an allow-list for this token.

        A token without expiry needs one when the policy says so, and always for a service account.
        """
        required = self.require_allowed_ips_without_expiry or (user is not None and is_service_account(user))
        if expires_at is None and required and not allowed_ips:
            raise ValidationError(
                {"allowed_ips": _("A token without expiry must be limited to the addresses it is used from.")}
            )

    def verdict(self, method, now=None):
        """Return the cutover Verdict for *method* now (reads the brownout windows: pages, not the API)."""
        now = now or timezone.now()
        return cutover_verdict(
            method=method,
            security_level=self.security_level,
            rehearsal_level=self.rehearsal_level,
            sunset_at=self.legacy_sunset_at,
            brownout_ends_at=BrownoutWindow.objects.open_until(now),
            now=now,
        )

    @classmethod
    def session_verdict(cls, now=None):
        """Return the cutover Verdict for a browser session on the API: one query, sessions only."""
        row = cls.objects.filter(pk=1).values_list("security_level", "rehearsal_level").first()
        level, rehearsal = row or (SecurityLevel.COMPATIBILITY, RehearsalLevel.NONE)
        return cutover_verdict(
            method=Method.SESSION,
            security_level=level,
            rehearsal_level=rehearsal,
            sunset_at=None,
            brownout_ends_at=None,
            now=now or timezone.now(),
        )

    def legacy_refusal(self, now=None):
        """Return why legacy keys are refused now, or None while they are accepted."""
        return self.verdict(Method.LEGACY_KEY, now).refusal

    def level_in_force(self, now=None):
        return effective_level(
            security_level=self.security_level, sunset_at=self.legacy_sunset_at, now=now or timezone.now()
        )

    def next_level(self, now=None):
        """Return the next stricter level after the one in force, or None at the strictest."""
        order = list(SecurityLevel)
        index = order.index(SecurityLevel(self.level_in_force(now)))
        return order[index + 1] if index + 1 < len(order) else None

    def transition_state(self):
        """Return what the audit compares: level, rehearsal, sunset and the brownout windows."""
        return {
            **{name: getattr(self, name) for name in self.TRANSITION_FIELDS},
            "brownouts": sorted(
                BrownoutWindow.objects.filter(policy_id=self.pk).values_list("starts_at", "ends_at", "note")
            ),
        }

    def record_transition_changes(self, *, before, actor, now=None):
        """Write one Activity Stream event per change of level, rehearsal, sunset or windows since *before*.

        Called in the admin's save transaction, after the row and its windows are written.
        """
        now = now or timezone.now()
        after = self.transition_state()
        Kind = TokenEvent.Kind

        def text(value):
            if value is None:
                return "-"
            return _utc(value) if hasattr(value, "tzinfo") else str(value)

        events = []
        for field, kind in (
            ("security_level", Kind.LEVEL_CHANGED),
            ("rehearsal_level", Kind.REHEARSAL_CHANGED),
            ("legacy_sunset_at", Kind.SUNSET_CHANGED),
        ):
            if before[field] != after[field]:
                events.append((kind, f"{text(before[field])} → {text(after[field])}"))
        removed = [w for w in before["brownouts"] if w not in after["brownouts"]]
        added = [w for w in after["brownouts"] if w not in before["brownouts"]]
        for sign, windows in (("-", removed), ("+", added)):
            for starts_at, ends_at, note in windows:
                detail = f"{sign} {text(starts_at)} – {text(ends_at)} {note}".strip()[:255]
                events.append((Kind.BROWNOUT_CHANGED, detail))
        TokenEvent.objects.bulk_create(
            [
                TokenEvent(user_id=actor.pk, actor_id=actor.pk, kind=kind, at=now, detail=detail)
                for kind, detail in events
            ]
        )
        return len(events)


class BrownoutWindowQuerySet(models.QuerySet):
    def open_until(self, now):
        """Return when the brownout open at *now* ends (the latest end of overlapping windows), or None."""
        return self.filter(starts_at__lte=now, ends_at__gt=now).aggregate(end=models.Max("ends_at"))["end"]

    def upcoming(self, now):
        """Return the windows not yet over at *now*, soonest first."""
        return self.filter(ends_at__gt=now).order_by("starts_at")


class BrownoutWindow(models.Model):
    """A scheduled time during which legacy keys are refused as under ``high``: a rehearsal clients feel."""

    policy = models.ForeignKey(
        SitePolicy,
        verbose_name=_("policy"),
        on_delete=models.CASCADE,
        related_name="brownouts",
        db_index=False,
    )
    starts_at = models.DateTimeField(verbose_name=_("starts at"))
    ends_at = models.DateTimeField(verbose_name=_("ends at"))
    note = models.CharField(verbose_name=_("note"), max_length=200, blank=True)

    objects = BrownoutWindowQuerySet.as_manager()

    class Meta:
        verbose_name = _("brownout window")
        verbose_name_plural = _("brownout windows")
        ordering = ("starts_at",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="brownout_ends_after_start"
            ),
        ]
        # The legacy-key lookup asks for the window open now: windows not yet over, by their end.
        indexes = [models.Index(fields=["ends_at", "starts_at"], name="brownout_ends")]

    def __str__(self):
        return f"{_utc(self.starts_at)} – {_utc(self.ends_at)}"

    def clean(self):
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": _("A brownout must end after it starts.")})


class RehearsedSessionRequestQuerySet(models.QuerySet):
    def record(self, *, user_id, at, method, path, ip, user_agent):
        """Append one row: a browser session's API request that a ``bearer_only`` rehearsal would refuse."""
        self.create(
            user_id=user_id,
            at=at,
            method=storable(method, 10),
            path=storable(path, PATH_MAX_LENGTH),
            ip=ip,
            user_agent=storable(user_agent, USER_AGENT_MAX_LENGTH),
        )


class RehearsedSessionRequest(models.Model):
    """A browser session's API request, served, that ``bearer_only`` would refuse.

    UsageRecord holds the uses of a token or key; a session has neither, and is only worth a row while
    a rehearsal asks who would break. Written only then, one append-only INSERT.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    method = models.CharField(verbose_name=_("method"), max_length=10)
    path = models.CharField(verbose_name=_("path"), max_length=PATH_MAX_LENGTH)
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    user_agent = models.CharField(verbose_name=_("user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True)

    objects = RehearsedSessionRequestQuerySet.as_manager()

    class Meta:
        verbose_name = _("rehearsed session request")
        verbose_name_plural = _("rehearsed session requests")
        indexes = [models.Index(fields=["at"], name="rehearsed_session_at")]

    def __str__(self):
        return f"{self.method} {self.path} {self.at:%Y-%m-%d %H:%M}"
