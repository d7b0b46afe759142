"""Attempt counters for the throttles, and the refused unknown-credential attempts administrators see.

Both are written with one atomic UPSERT (``INSERT … ON CONFLICT … DO UPDATE … RETURNING``), which
SQLite (3.35+) and PostgreSQL run as a single statement: two processes or two nodes counting the same
key at the same moment both get a distinct, exact new count. A cache (Django's database cache among
them) can only read and then write, so parallel attempts would all read the same old count and all get
their password checked.
"""

from datetime import UTC, timedelta

from django.db import connections, models
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from ..constants import USER_AGENT_MAX_LENGTH
from .usage import storable

ATTEMPT_KEY_MAX_LENGTH = 100
# Counters whose window started longer ago than this are dead whatever their limit; prune_usage drops them.
LONGEST_WINDOW = timedelta(days=1)


def _aware(value):
    # A raw cursor hands back text on SQLite and an aware datetime on PostgreSQL.
    if isinstance(value, str):
        value = parse_datetime(value)
    # SQLite keeps naive UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class AttemptCounterQuerySet(models.QuerySet):
    def hit(self, *, key, window, now=None):
        """Count one attempt under *key* and return ``(count, window_start)`` after it, atomically.

        A window opens with the first attempt and lasts *window*; the first attempt after it has run
        out opens a new one at 1. Call this BEFORE the work being limited (the password hash, the
        credential lookup): the count then includes every attempt in flight, and a limit holds under
        any parallelism.
        """
        now = now or timezone.now()
        conn = connections[self.db]
        table = conn.ops.quote_name(self.model._meta.db_table)
        key_col, start_col, hits_col = (conn.ops.quote_name(c) for c in ("key", "window_start", "hits"))
        open_window = f"{table}.{start_col} > %s"
        sql = (
            f"INSERT INTO {table} ({key_col}, {start_col}, {hits_col}) VALUES (%s, %s, 1) "
            f"ON CONFLICT ({key_col}) DO UPDATE SET "
            f"{hits_col} = CASE WHEN {open_window} THEN {table}.{hits_col} + 1 ELSE 1 END, "
            f"{start_col} = CASE WHEN {open_window} THEN {table}.{start_col} ELSE excluded.{start_col} END "
            f"RETURNING {hits_col}, {start_col}"
        )
        at = conn.ops.adapt_datetimefield_value(now)
        cutoff = conn.ops.adapt_datetimefield_value(now - window)
        with conn.cursor() as cursor:
            cursor.execute(sql, [key[:ATTEMPT_KEY_MAX_LENGTH], at, cutoff, cutoff])
            hits, start = cursor.fetchone()
        return hits, _aware(start)

    def current(self, *, key, window, now=None):
        """Return the count of *key*'s open window (0 when none) and its start, without counting."""
        now = now or timezone.now()
        row = (
            self.filter(key=key[:ATTEMPT_KEY_MAX_LENGTH], window_start__gt=now - window)
            .values_list("hits", "window_start")
            .first()
        )
        return row or (0, None)

    def give_back(self, *, key):
        """Take one attempt off *key* (a sign-in that succeeded was no failure), never below zero."""
        self.filter(key=key[:ATTEMPT_KEY_MAX_LENGTH], hits__gt=0).update(hits=models.F("hits") - 1)

    def forget(self, *, key):
        self.filter(key=key[:ATTEMPT_KEY_MAX_LENGTH]).delete()

    def expired(self, now=None):
        return self.filter(window_start__lt=(now or timezone.now()) - LONGEST_WINDOW)


class AttemptCounter(models.Model):
    """Attempts under one key (a hashed username, a client address…) in the current window."""

    key = models.CharField(
        verbose_name=_("key"),
        max_length=ATTEMPT_KEY_MAX_LENGTH,
        unique=True,
    )
    window_start = models.DateTimeField(
        verbose_name=_("window start"),
    )
    hits = models.PositiveIntegerField(
        verbose_name=_("attempts"),
        default=0,
    )

    objects = AttemptCounterQuerySet.as_manager()

    class Meta:
        verbose_name = _("attempt counter")
        verbose_name_plural = _("attempt counters")
        indexes = [models.Index(fields=["window_start"], name="attempt_window_start")]

    def __str__(self):
        return self.key


class RefusedClientQuerySet(models.QuerySet):
    def record(self, *, ip, user_agent, now=None):
        """Count one refused unknown credential from *ip* in the current hour's row (one UPSERT).

        One row per address per hour, however many attempts: a flood cannot fill the disk faster than
        the number of addresses it comes from, and ``prune_usage`` drops rows past the retention.
        """
        now = now or timezone.now()
        conn = connections[self.db]
        table = conn.ops.quote_name(self.model._meta.db_table)
        q = conn.ops.quote_name
        at = conn.ops.adapt_datetimefield_value(now)
        hour = conn.ops.adapt_datetimefield_value(now.replace(minute=0, second=0, microsecond=0))
        ip_col, hour_col, attempts, first, last, agent = (
            q(c) for c in ("ip", "hour", "attempts", "first_seen", "last_seen", "last_user_agent")
        )
        sql = (
            f"INSERT INTO {table} ({ip_col}, {hour_col}, {attempts}, {first}, {last}, {agent}) "
            "VALUES (%s, %s, 1, %s, %s, %s) "
            f"ON CONFLICT ({ip_col}, {hour_col}) DO UPDATE SET {attempts} = {table}.{attempts} + 1, "
            f"{last} = excluded.{last}, {agent} = excluded.{agent}"
        )
        with conn.cursor() as cursor:
            agent_text = storable(user_agent or "", USER_AGENT_MAX_LENGTH)
            cursor.execute(sql, [ip or "0.0.0.0", hour, at, at, agent_text])

    def older_than(self, moment):
        return self.filter(hour__lt=moment)


class RefusedClient(models.Model):
    """Refused API requests with an unknown credential, per client address and hour (for administrators).

    A refused well-formed known credential (revoked, expired) is a usage record of that credential; an
    unknown one has no credential to hang a record on, so it is counted here, by who sent it.
    """

    ip = models.GenericIPAddressField(
        verbose_name=_("client IP"),
    )
    hour = models.DateTimeField(
        verbose_name=_("hour"),
    )
    attempts = models.PositiveBigIntegerField(
        verbose_name=_("refused attempts"),
        default=0,
    )
    first_seen = models.DateTimeField(
        verbose_name=_("first seen"),
    )
    last_seen = models.DateTimeField(
        verbose_name=_("last seen"),
    )
    last_user_agent = models.CharField(
        verbose_name=_("last user agent"),
        max_length=USER_AGENT_MAX_LENGTH,
        blank=True,
    )

    objects = RefusedClientQuerySet.as_manager()

    class Meta:
        verbose_name = _("refused unknown credential")
        verbose_name_plural = _("refused unknown credentials")
        ordering = ("-hour", "-attempts")
        constraints = [models.UniqueConstraint(fields=["ip", "hour"], name="refused_client_ip_hour")]
        indexes = [models.Index(fields=["hour"], name="refused_client_hour")]

    def __str__(self):
        return f"{self.ip} {self.hour:%Y-%m-%d %H:00}"
