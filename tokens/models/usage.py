from datetime import timedelta

from django.conf import settings
from django.db import connections, models
from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import sqlite_turns
from ..constants import PATH_MAX_LENGTH, USER_AGENT_MAX_LENGTH


_INSERT = (
    "INSERT INTO tokens_usagerecord (token_id, legacy_key_id, user_id, at, accepted, method, path, status, "
    "ip, user_agent, duration_ms, would_refuse) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def storable(text, limit):
    """Return *text* as both databases can store it, cut to *limit* characters.

    PostgreSQL refuses NUL in text and neither database takes a lone surrogate, yet a request path
    (``/api/tokens%00``) or a user agent may hold either. A refused INSERT would leave the use of a
    revoked token unrecorded, so they are written as visible escapes instead: NUL as ``\\x00``, a
    surrogate as ``\\udXXX``, and a backslash as ``\\\\`` so that no stored text can pose as an escape.
    """
    text = text.replace("\\", "\\\\").replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


class UsageRecordQuerySet(models.QuerySet):
    def older_than(self, moment):
        return self.filter(at__lt=moment)

    def record(self, *, token_id=None, legacy_key_id=None, user_id, at, accepted, method, path, status, ip,
               user_agent, duration_ms, would_refuse=False):
        """Insert one record with a single autocommitted statement (the trigger does the rest).

        Its locks come in a fixed order: the credential's row (trigger), its day and address rows,
        then at commit FOR KEY SHARE on the owner's row (foreign keys). Every other writer must fit
        around that: docs/security.md, "Lock order".

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
            storable(method, 10),
            storable(path, PATH_MAX_LENGTH),
            status,
            ip,
            storable(user_agent, USER_AGENT_MAX_LENGTH),
            duration_ms,
            would_refuse,
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
    # The cutover rehearsal: served, but the rehearsed security level would have refused it. Counted
    # from these rows directly (the overview's window, by "at"), not by the trigger or the summaries.
    would_refuse = models.BooleanField(verbose_name=_("would be refused"), default=False, db_default=False)

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


class DailyUsageQuerySet(models.QuerySet):
    def series(self, days=30, today=None):
        """Return [(date, accepted, refused)] for the last *days* UTC days, zeros included, oldest first.

        Rows of several credentials in the queryset are summed per day.
        """
        today = today or timezone.now().date()
        start = today - timedelta(days=days - 1)
        rows = {
            row["day"]: (row["a"], row["r"])
            for row in self.filter(day__gte=start, day__lte=today)
            .values("day")
            .annotate(a=Sum("accepted"), r=Sum("refused"))
        }
        return [(start + timedelta(days=i), *rows.get(start + timedelta(days=i), (0, 0))) for i in range(days)]


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

    objects = DailyUsageQuerySet.as_manager()

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

