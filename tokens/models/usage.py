from django.conf import settings
from django.db import connections, models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import sqlite_turns
from ..constants import PATH_MAX_LENGTH, USER_AGENT_MAX_LENGTH


_INSERT = (
    "INSERT INTO tokens_usagerecord (token_id, legacy_key_id, user_id, at, accepted, method, path, status, "
    "ip, user_agent, duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


class UsageRecordQuerySet(models.QuerySet):
    def older_than(self, moment):
        return self.filter(at__lt=moment)

    def record(self, *, token_id=None, legacy_key_id=None, user_id, at, accepted, method, path, status, ip,
               user_agent, duration_ms):
        """Insert one record with a single autocommitted statement (the trigger does the rest).

        This runs on every API request, so it skips the ORM's query building: one raw INSERT.
        Outside a transaction it commits at once without waiting for the disk (SQLite
        ``synchronous=NORMAL``, PostgreSQL asynchronous commit): the counts are exact as soon as
        the statement returns; a crash of the machine or of the database server may lose the last
        moments of records, never a security write (see docs/performance.md).
        """
        conn = connections[self.db]
        sql = _INSERT
        # Only in autocommit mode: never inside a transaction (atomic() switches autocommit off), which
        # may hold a security write.
        relaxed = conn.get_autocommit()
        if relaxed and conn.vendor == "postgresql":
            # The statement switches its own implicit transaction to asynchronous commit: the row and
            # the trigger's counts are visible to everyone at once, but the commit does not wait for
            # the WAL flush.
            sql += " RETURNING set_config('synchronous_commit', 'off', true)"
        params = [
            token_id,
            legacy_key_id,
            user_id,
            conn.ops.adapt_datetimefield_value(at),
            accepted,
            method[:10],
            path[:PATH_MAX_LENGTH],
            status,
            ip,
            user_agent[:USER_AGENT_MAX_LENGTH],
            duration_ms,
        ]
        with conn.cursor() as cursor:
            if not (relaxed and conn.vendor == "sqlite"):
                cursor.execute(sql, params)
                return
            # Every other commit is synchronous=FULL (settings.py); this one need not wait for an
            # fsync. A connection flag rather than a statement: set on the driver's own connection.
            conn.connection.execute("PRAGMA synchronous=NORMAL")
            try:
                # Queued behind the other processes' usage INSERTs rather than sleeping on the lock.
                with sqlite_turns.turns.turn(conn):
                    cursor.execute(sql, params)
            finally:
                conn.connection.execute("PRAGMA synchronous=FULL")


class UsageRecord(models.Model):
    """One API request made with a token or legacy key (accepted, or refused with a well-formed one).

    Inserting a row is the whole write path of a request: a database trigger (migration 0002) adds
    it to the credential's counters and last use, the per-day summary and the client address list in
    the same statement, so counts are exact under any concurrency and survive pruning.
    """

    token = models.ForeignKey(
        "tokens.Token", verbose_name=_("token"), on_delete=models.CASCADE, null=True, blank=True,
        related_name="usage_records", db_index=False,
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey", verbose_name=_("legacy key"), on_delete=models.CASCADE, null=True, blank=True,
        related_name="usage_records", db_index=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+",
        db_index=False,
    )
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    accepted = models.BooleanField(verbose_name=_("accepted"), default=True)
    method = models.CharField(verbose_name=_("method"), max_length=10)
    path = models.CharField(verbose_name=_("path"), max_length=PATH_MAX_LENGTH)
    status = models.PositiveSmallIntegerField(verbose_name=_("status"))
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    user_agent = models.CharField(verbose_name=_("user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True)
    duration_ms = models.FloatField(verbose_name=_("duration (ms)"))

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ("-at", "-id")
        indexes = [
            # Partial: a record has a token or a legacy key, so each INSERT writes one of these two
            # indexes, not both (one page less to write per API request). In the pages' exact order
            # (newest first, id breaking ties), so a page of requests is a short walk of the index.
            models.Index(
                fields=["token", "-at", "-id"], name="usage_token_at", condition=Q(token__isnull=False)
            ),
            models.Index(
                fields=["legacy_key", "-at", "-id"],
                name="usage_legacy_at",
                condition=Q(legacy_key__isnull=False),
            ),
            models.Index(fields=["user", "-at"], name="usage_user_at"),
            models.Index(fields=["at"], name="usage_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(token__isnull=False) | Q(legacy_key__isnull=False), name="usage_has_credential"
            ),
        ]

    def __str__(self):
        return f"{self.method} {self.path} {self.status}"


class DailyUsage(models.Model):
    """Requests per UTC day per credential, kept by the trigger; survives pruning of UsageRecord."""

    token = models.ForeignKey(
        "tokens.Token", on_delete=models.CASCADE, null=True, blank=True, related_name="daily_usage", db_index=False
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey", on_delete=models.CASCADE, null=True, blank=True, related_name="daily_usage",
        db_index=False,
    )
    day = models.DateField(verbose_name=_("day"))
    accepted = models.PositiveBigIntegerField(verbose_name=_("accepted requests"), default=0)
    refused = models.PositiveBigIntegerField(verbose_name=_("refused requests"), default=0)

    class Meta:
        verbose_name = _("daily usage")
        verbose_name_plural = _("daily usage")
        constraints = [
            models.UniqueConstraint(fields=["token", "day"], condition=Q(token__isnull=False), name="daily_token_day"),
            models.UniqueConstraint(
                fields=["legacy_key", "day"], condition=Q(legacy_key__isnull=False), name="daily_legacy_day"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="daily_day")]


class ClientAddress(models.Model):
    """Each client IP a credential was used from, kept by the trigger; survives pruning."""

    token = models.ForeignKey(
        "tokens.Token", on_delete=models.CASCADE, null=True, blank=True, related_name="client_addresses",
        db_index=False,
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey", on_delete=models.CASCADE, null=True, blank=True, related_name="client_addresses",
        db_index=False,
    )
    ip = models.GenericIPAddressField(verbose_name=_("client IP"))
    first_seen = models.DateTimeField(verbose_name=_("first seen"))
    last_seen = models.DateTimeField(verbose_name=_("last seen"))
    last_user_agent = models.CharField(verbose_name=_("last user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True)
    requests = models.PositiveBigIntegerField(verbose_name=_("requests"), default=0)

    class Meta:
        verbose_name = _("client address")
        verbose_name_plural = _("client addresses")
        ordering = ("-last_seen",)
        constraints = [
            models.UniqueConstraint(fields=["token", "ip"], condition=Q(token__isnull=False), name="client_token_ip"),
            models.UniqueConstraint(
                fields=["legacy_key", "ip"], condition=Q(legacy_key__isnull=False), name="client_legacy_ip"
            ),
        ]


class TokenEventQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)


class TokenEvent(models.Model):
    """One entry of the Activity Stream, written where the change happens."""

    class Kind(models.TextChoices):
        CREATED = "created", _("created")
        RENAMED = "renamed", _("renamed")
        REVOKED = "revoked", _("revoked")
        EXPIRED = "expired", _("expired")
        SHORTENED = "shortened", _("expiry shortened")
        FIRST_USED = "first_used", _("first used")
        LEGACY_USED = "legacy_used", _("legacy key used")
        LEGACY_REVOKED = "legacy_revoked", _("legacy key revoked")
        ACCESS_CHANGED = "access_changed", _("access changed")
        PERMISSIONS_CHANGED = "permissions_changed", _("permissions changed")
        ADDRESSES_CHANGED = "addresses_changed", _("allowed addresses changed")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.CASCADE, related_name="token_events",
        db_index=False,
    )
    token = models.ForeignKey(
        "tokens.Token", verbose_name=_("token"), on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey", verbose_name=_("legacy key"), on_delete=models.CASCADE, null=True, blank=True,
        related_name="events",
    )
    kind = models.CharField(verbose_name=_("event"), max_length=20, choices=Kind.choices)
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("by"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    detail = models.CharField(verbose_name=_("detail"), max_length=255, blank=True)

    objects = TokenEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("activity event")
        verbose_name_plural = _("activity stream")
        ordering = ("-at", "-id")
        indexes = [models.Index(fields=["user", "-at"], name="event_user_at")]
        constraints = [
            # These happen once per token; the constraint makes concurrent writers harmless.
            models.UniqueConstraint(
                fields=["token", "kind"],
                condition=Q(kind__in=["created", "expired", "first_used", "revoked"]),
                name="event_once_per_token",
            ),
            # At most one "legacy key used" entry per key and day (detail holds the ISO date).
            models.UniqueConstraint(
                fields=["legacy_key", "kind", "detail"],
                condition=Q(kind="legacy_used"),
                name="event_legacy_use_per_day",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.at:%Y-%m-%d %H:%M}"

    @classmethod
    def record_expiries(cls, tokens=None, now=None):
        """Write an "expired" event for each expired token that has none yet (idempotent)."""
        from .tokens import Token

        tokens = (tokens if tokens is not None else Token.objects.all()).expired(now)
        pending = tokens.exclude(events__kind=cls.Kind.EXPIRED).values_list("pk", "user_id", "expires_at")
        cls.objects.bulk_create(
            [cls(token_id=pk, user_id=user_id, kind=cls.Kind.EXPIRED, at=expires_at) for pk, user_id, expires_at in pending],
            ignore_conflicts=True,
        )


def daily_series(queryset, days=30, today=None):
    """Return [(date, accepted, refused)] for the last *days* UTC days, zeros included, oldest first.

    *queryset* is a DailyUsage queryset already filtered to one credential (or several, summed).
    """
    from datetime import timedelta

    from django.db.models import Sum

    today = today or timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = {
        row["day"]: (row["a"], row["r"])
        for row in queryset.filter(day__gte=start, day__lte=today)
        .values("day")
        .annotate(a=Sum("accepted"), r=Sum("refused"))
    }
    return [(start + timedelta(days=i), *rows.get(start + timedelta(days=i), (0, 0))) for i in range(days)]
