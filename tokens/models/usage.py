"""The usage store: one append-only record per API request, and the summaries derived from it.

``UsageRecord`` is the request path's whole write; ``DailyUsage`` and ``ClientAddress`` are the per-day
and per-address summaries the summariser keeps, behind the watermark of ``UsageSummaryState``, and that
survive pruning. Its own module because the records are written on every request and read by every
usage page: nothing here may slow the request path, and nothing outside may write the summaries.
"""

import contextvars
import logging
import re
import threading
import time as clock
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, transaction
from django.db.models import Count, Max, Min, Q, Sum, prefetch_related_objects
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import metrics, sqlite_turns
from ..constants import PATH_MAX_LENGTH, USER_AGENT_MAX_LENGTH

_INSERT = (
    "INSERT INTO tokens_usagerecord (token_id, legacy_key_id, user_id, at, accepted, method, path, status, "
    "ip, user_agent, duration_ms, would_refuse) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


# C0 controls, DEL and C1 controls (U+0080-U+009F): every character Unicode calls a control (Cc).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def storable(text, limit):
    """Return *text* (a client's path or user agent) safe to store and to show, cut to *limit* characters.

    The one place where what a client sends about its request is made harmless, so that everything that
    reads it later (pages, the admin, mails, ``send_alerts`` on a console, ``export_events``) shows it
    as it is stored:

    * control characters are written as visible escapes (ESC as ``\\x1b``, the C1 CSI as ``\\x9b``):
      raw, ESC, BEL or CSI would drive the terminal of an operator who reads a mail on a console or an
      export in a shell, and a newline would forge a line;
    * so is NUL (PostgreSQL refuses it in text: a refused INSERT would leave the use of a revoked token
      unrecorded), and a lone surrogate (``\\udXXX``), which neither database takes;
    * a backslash is doubled, so that no stored text can pose as an escape.
    """
    text = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text.replace("\\", "\\\\"))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


# Where UsageRecord.objects.lag() stops counting.
LAG_COUNT_LIMIT = 1_000_000


class UsageRecordQuerySet(models.QuerySet):
    def older_than(self, moment):
        return self.filter(at__lt=moment)

    def summarised(self):
        """The records the summaries already hold (at or below the watermark)."""
        return self.filter(pk__lte=self.summarised_through())

    def unsummarised(self, **lookups):
        """The records the summaries do not hold yet: an index range on the newest ids.

        The watermark is read first (one primary-key lookup) and goes into the query as a number: as a
        subquery its value is unknown when the query is planned, and PostgreSQL then guesses that a
        third of the table qualifies and scans every partition.

        *lookups* (``token=…``, ``legacy_key__isnull=False``, ``at__gte=…``) narrow the tail. Give them
        here rather than filtering the result: each is applied to COALESCE(column, column), which no
        index holds, so the database can only find the tail by the primary-key range. Filtered on the
        column itself, SQLite (without statistics) and PostgreSQL (with old ones) walk the
        credential's (token, at) index through its whole history to find a few new records: on a
        token with a million, its page was five times slower (docs/performance.md, session 4).
        """
        tail = self.filter(pk__gt=_tail_from(self.db))
        for lookup, value in lookups.items():
            name, _, condition = lookup.partition("__")
            column = self.model._meta.get_field(name).attname
            alias = f"unindexed_{column}"
            tail = tail.alias(**{alias: Coalesce(column, column)}).filter(
                **{f"{alias}__{condition or 'exact'}": getattr(value, "pk", value)}
            )
        return tail

    def record(
        self,
        *,
        token_id=None,
        legacy_key_id=None,
        user_id,
        at,
        accepted,
        method,
        path,
        status,
        ip,
        user_agent,
        duration_ms,
        would_refuse=False,
    ):
        """Insert one record with a single autocommitted, append-only statement.

        No trigger and no foreign-key check: the INSERT locks no shared row (not the credential's, not
        a summary's, not the owner's), so any number of requests for one token run side by side. The
        counters, last use, per-day and per-address summaries are derived later by ``summarise`` and
        read exactly as summary + unsummarised tail (``usage_totals``, ``DailyUsageQuerySet.series``,
        ``client_addresses``).

        This runs on every API request, so it skips the ORM's query building: one raw INSERT.
        Outside a transaction it commits at once without waiting for the disk (SQLite
        ``synchronous=NORMAL``, PostgreSQL asynchronous commit): the record is visible as soon as
        the statement returns; a crash of the machine or of the database server may lose the last
        moments of records, never a security write (see docs/performance.md).
        """
        conn = connections[self.db]
        sql = _INSERT
        # Only in autocommit mode: never inside a transaction (atomic() switches autocommit off), which
        # may hold a security write.
        relaxed = conn.get_autocommit()
        if relaxed and conn.vendor == "postgresql":
            # The statement switches its own implicit transaction to asynchronous commit: the row is
            # visible to everyone at once, but the commit does not wait for the WAL flush.
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
            else:
                # Every other commit is synchronous=FULL (settings.py); this one need not wait for an
                # fsync. A connection flag rather than a statement: set on the driver's own connection.
                conn.connection.execute("PRAGMA synchronous=NORMAL")
                try:
                    # Queued behind the other processes' usage INSERTs rather than sleeping on the lock.
                    with sqlite_turns.turns.turn(conn):
                        cursor.execute(sql, params)
                finally:
                    conn.connection.execute("PRAGMA synchronous=FULL")
        summarising.count_record(self.db)

    def record_with(self, mark, **fields):
        """Run *mark()*, a write to the credential's row, and ``record(**fields)`` in one transaction.

        Both or neither: the rare request that marks a first use is not counted as used unless its
        record is written. On SQLite it still takes its turn with the other usage INSERTs (before the
        write lock, as they do). Return what *mark()* returned.
        """
        conn = connections[self.db]
        queued = conn.vendor == "sqlite" and conn.get_autocommit()
        with sqlite_turns.turns.turn(conn) if queued else nullcontext(), transaction.atomic(using=self.db):
            marked = mark()
            self.record(**fields)
        return marked

    def summarised_through(self):
        """The watermark: the highest record id the summaries hold."""
        state = UsageSummaryState.objects.using(self.db).filter(pk=1).first()
        return state.summarised_through if state else 0

    def lag(self):
        """Return how far the cron jobs are behind, for /metrics: ``(waiting, oldest waiting, oldest)``.

        *waiting*: records above the watermark (the summariser's backlog), counted up to LAG_COUNT_LIMIT:
        past it the summariser is badly behind, and an exact number would only make /metrics slow;
        *oldest waiting*: the time of the first of them (None: none); *oldest*: the time of the oldest
        record kept (past the retention when prune_usage does not run). Index reads only.
        """
        tail = self.filter(pk__gt=self.summarised_through())
        waiting = tail[:LAG_COUNT_LIMIT].count()
        oldest_waiting = tail.order_by("pk").values_list("at", flat=True).first() if waiting else None
        oldest = self.aggregate(at=Min("at"))["at"]
        return waiting, oldest_waiting, oldest

    def summarise(self, *, batch_size=None, max_batches=None, wait=False):
        """Fold the records above the watermark into the summaries; return how many were folded in.

        Bounded batches, each one short transaction that updates the summaries and moves the watermark
        together, so a batch counts once or not at all (idempotent; a crash loses nothing). Safe with
        several processes and nodes at once: the watermark row is taken with ``FOR UPDATE SKIP LOCKED``
        on PostgreSQL (a second summariser finds it taken and returns 0) and under SQLite's write
        lock (``BEGIN IMMEDIATE``) on SQLite. Stops when a batch comes back short, or after
        *max_batches*. With *wait*, it waits for a summariser running elsewhere instead of returning
        (``prune_usage``, which must not delete what is not summarised yet).
        """
        return summarising.summarise(self.db, batch_size=batch_size, max_batches=max_batches, wait=wait)

    def address_is_new(self, *, ip, token_id=None, legacy_key_id=None, before_id=None):
        """Tell whether *ip* was never seen for this credential: the watermark, then two index probes.

        Seen means a row of the summaries' unique (credential, ip) index, or a record of the
        unsummarised tail from that ip; *before_id* (the id of the request being handled) leaves that
        request and any later one out. Meant for new-address alerts (docs/scaling.md).
        """
        field, credential_id = ("token", token_id) if token_id is not None else ("legacy_key", legacy_key_id)
        tail = self.unsummarised(**{f"{field}_id": credential_id}).filter(ip=ip)
        if before_id is not None:
            tail = tail.filter(pk__lt=before_id)
        seen = ClientAddress.objects.filter(**{f"{field}_id": credential_id}, ip=ip)
        either = models.Q(models.Exists(seen)) | models.Q(models.Exists(tail))
        return not UsageSummaryState.objects.filter(either).exists()


class UsageRecord(models.Model):
    """One API request made with a token or legacy key (accepted, or refused with a well-formed one).

    Inserting a row is the whole write path of a request, append-only. ``summarise`` later adds it to
    the credential's counters and last use, the per-day summary and the client addresses, which
    survive pruning; until then the readers add it themselves (summary + tail), so counts are exact
    as soon as the response has been received. On PostgreSQL the table is partitioned by day on
    ``at`` (migration 0010, ``prune_usage``).
    """

    # No database foreign keys (db_constraint=False): their check would cost every INSERT about 25 µs and
    # take FOR KEY SHARE on the owner's row, making requests wait for the owner's writes (docs/security.md,
    # "Lock order"). Integrity is kept by Django instead: deleting a
    # user, token or key deletes its records (on_delete=CASCADE runs in the ORM), and the summariser
    # skips a record whose credential is gone (a request that raced the deletion).
    token = models.ForeignKey(
        "tokens.Token",
        verbose_name=_("token"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="usage_records",
        db_index=False,
        db_constraint=False,
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey",
        verbose_name=_("legacy key"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="usage_records",
        db_index=False,
        db_constraint=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
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
    # from these rows directly (the overview's window, by "at"), not by the summaries.
    would_refuse = models.BooleanField(verbose_name=_("would be refused"), default=False, db_default=False)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage records")
        ordering = ("-at", "-id")
        # /metrics: the operators' view of all usage, for a monitoring system's token (docs/operations.md).
        permissions = (("view_metrics", _("Can read the portal's metrics")),)
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
    def series(self, days=30, today=None, *, tail=None):
        """Return [(date, accepted, refused)] for the last *days* UTC days, zeros included, oldest first.

        Rows of several credentials in the queryset are summed per day. *tail*, the records of the same
        credentials not summarised yet (``UsageRecord.objects.unsummarised(token=…)``), is added, so the
        numbers are exact: one more query, an index range above the watermark.
        """
        today = today or timezone.now().date()
        start = today - timedelta(days=days - 1)
        rows = {
            row["day"]: (row["a"], row["r"])
            for row in self.filter(day__gte=start, day__lte=today)
            .values("day")
            .annotate(a=Sum("accepted"), r=Sum("refused"))
        }
        if tail is not None:
            # No range on "at" here: with one, the (token, at) index would serve it, through every
            # record of the 30 days instead of the few ids above the watermark. The tail is short and
            # new; its days outside the window are dropped below.
            tail = (
                tail.annotate(day=TruncDate("at", tzinfo=UTC))
                .values("day")
                .annotate(a=Count("pk", filter=Q(accepted=True)), r=Count("pk", filter=Q(accepted=False)))
                .order_by()
            )
            for row in tail:
                if not start <= row["day"] <= today:
                    continue
                accepted, refused = rows.get(row["day"], (0, 0))
                rows[row["day"]] = (accepted + row["a"], refused + row["r"])
        return [
            (start + timedelta(days=i), *rows.get(start + timedelta(days=i), (0, 0))) for i in range(days)
        ]


class DailyUsage(models.Model):
    """Requests per UTC day per credential, kept by ``summarise``; survives pruning of UsageRecord."""

    token = models.ForeignKey(
        "tokens.Token",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="daily_usage",
        db_index=False,
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="daily_usage",
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
            models.UniqueConstraint(
                fields=["token", "day"], condition=Q(token__isnull=False), name="daily_token_day"
            ),
            models.UniqueConstraint(
                fields=["legacy_key", "day"], condition=Q(legacy_key__isnull=False), name="daily_legacy_day"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="daily_day")]

    def __str__(self):
        return f"{self.day}: {self.accepted} accepted, {self.refused} refused"


class ClientAddress(models.Model):
    """Each client IP a credential was used from, kept by ``summarise``; survives pruning."""

    token = models.ForeignKey(
        "tokens.Token",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="client_addresses",
        db_index=False,
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="client_addresses",
        db_index=False,
    )
    ip = models.GenericIPAddressField(verbose_name=_("client IP"))
    first_seen = models.DateTimeField(verbose_name=_("first seen"))
    last_seen = models.DateTimeField(verbose_name=_("last seen"))
    last_user_agent = models.CharField(
        verbose_name=_("last user agent"), max_length=USER_AGENT_MAX_LENGTH, blank=True
    )
    requests = models.PositiveBigIntegerField(verbose_name=_("requests"), default=0)

    class Meta:
        verbose_name = _("client address")
        verbose_name_plural = _("client addresses")
        ordering = ("-last_seen",)
        constraints = [
            models.UniqueConstraint(
                fields=["token", "ip"], condition=Q(token__isnull=False), name="client_token_ip"
            ),
            models.UniqueConstraint(
                fields=["legacy_key", "ip"], condition=Q(legacy_key__isnull=False), name="client_legacy_ip"
            ),
        ]

    def __str__(self):
        return str(self.ip)


class UsageSummaryState(models.Model):
    """The summaries' watermark: every record with an id at or below it is in the summaries.

    One row (pk=1). The summariser locks it for the length of a batch, which is what lets several
    processes and nodes run it at once without folding a record in twice.
    """

    summarised_through = models.BigIntegerField(verbose_name=_("summarised through record id"), default=0)
    updated_at = models.DateTimeField(verbose_name=_("updated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("usage summary state")
        verbose_name_plural = _("usage summary state")
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="usage_summary_state_single_row")]

    def __str__(self):
        return f"summarised through record {self.summarised_through}"


log = logging.getLogger(__name__)

BATCH_SIZE = 5_000  # records per summarising transaction
SUMMARISE_EVERY = 500  # usage records a process writes between its own summarising runs
SETTLE_WAIT = 2.0  # seconds a PostgreSQL summariser waits for INSERTs in flight to finish


class Summariser:
    """Fold records into the summaries: from cron (``summarise_usage``) and after responses.

    Each process counts its usage INSERTs; every ``SUMMARISE_EVERY`` of them it runs one batch once the
    response has been sent (``request_finished``, like the SQLite checkpoint), so under traffic the
    tail stays a few thousand records long and the readers' tail query stays short.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._records = 0
        self._due = set()

    def count_record(self, alias):
        with self._lock:
            self._records += 1
            if self._records % SUMMARISE_EVERY == 0:
                self._due.add(alias)

    def after_response(self):
        if not self._due:  # the common case: no lock taken
            return
        with self._lock:
            due, self._due = self._due, set()
        for alias in due:
            if connections[alias].in_atomic_block:
                continue
            try:
                self.summarise(alias, max_batches=1)
            except DatabaseError:
                # The next run catches up; the readers stay exact meanwhile (summary + tail).
                log.warning("usage summarising failed; the next run will catch up")

    def summarise(self, alias, *, batch_size=None, max_batches=None, wait=False):
        batch_size = batch_size or BATCH_SIZE
        conn = connections[alias]
        total = batches = 0
        while max_batches is None or batches < max_batches:
            if conn.vendor == "sqlite":
                # Queue with the usage INSERTs first, then take the write lock (BEGIN IMMEDIATE): the
                # other order could leave an INSERT holding the turn and waiting for this lock.
                with sqlite_turns.turns.turn(conn), transaction.atomic(using=alias):
                    batch = self._batch(conn, batch_size, wait)
            else:
                with transaction.atomic(using=alias):
                    batch = self._batch(conn, batch_size, wait)
            if batch is None:  # another summariser holds the watermark
                break
            folded, more = batch
            total += folded
            batches += 1
            if not more:
                break
        if total:
            metrics.count(metrics.SUMMARISER_RUNS)
        return total

    def _batch(self, conn, batch_size, wait):
        """Fold the next *batch_size* ids above the watermark; return (records folded, ids left above).

        A window of ids, not "the next *batch_size* records": the query then reads at most
        *batch_size* rows whatever the tail holds. Ordered and limited instead, PostgreSQL read the
        whole tail from every partition and sorted it for each batch (docs/performance.md, session 4).
        The window starts at the first record above the watermark, and the watermark moves to its top
        even where ids are missing (rolled back, or deleted with their token): every id up to it is
        final. None: another summariser holds the watermark.
        """
        states = UsageSummaryState.objects.using(conn.alias)
        # Made by migration 0010; made again at 0 after the tests flush the tables.
        states.bulk_create([UsageSummaryState(pk=1)], ignore_conflicts=True)
        # Waiting is bounded by the lock timeout (5 s on PostgreSQL); another summariser's batch is short.
        state = states.select_for_update(skip_locked=not wait).filter(pk=1).first()
        if state is None:
            return None
        low = state.summarised_through
        high = _settled_bound(conn)
        records = UsageRecord.objects.using(conn.alias)
        # The window starts at the next record, so a run of missing ids costs one probe, not windows.
        first = records.filter(pk__gt=low).aggregate(first=Min("pk"))["first"]
        if first is None or first > high:
            return 0, False
        top = min(high, first - 1 + batch_size)
        rows = list(
            records.filter(pk__gt=low, pk__lte=top)
            .order_by("pk")
            .values_list("pk", "token_id", "legacy_key_id", "at", "accepted", "ip", "user_agent")
        )
        if rows:
            _fold(conn, rows)
        UsageSummaryState.objects.using(conn.alias).filter(pk=1).update(
            summarised_through=top, updated_at=timezone.now()
        )
        return len(rows), top < high


def _settled_bound(conn):
    """Return the highest record id no INSERT in flight can still commit below (-1: none yet).

    SQLite: the summariser holds the write lock, so no INSERT is in flight: the highest id there is.
    PostgreSQL: ids come from
    a sequence before their INSERT commits, so id 7 can become visible after id 8; a watermark moved
    past 8 would skip 7 for ever. Every INSERT holds its lock on the table from before it takes an id
    until it ends, so: read the sequence (S), list the transactions holding that lock, and wait for
    them to end. Every id up to S is then committed or rolled back. New INSERTs are never waited for
    and never blocked (pg_locks is only read).
    """
    if conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM tokens_usagerecord")
            return cursor.fetchone()[0]
    with conn.cursor() as cursor:
        cursor.execute("SELECT last_value, is_called FROM tokens_usagerecord_id_seq")
        last_value, is_called = cursor.fetchone()
        bound = last_value if is_called else last_value - 1
        cursor.execute(
            "SELECT array_agg(DISTINCT virtualtransaction) FROM pg_locks WHERE relation = "
            "'tokens_usagerecord'::regclass AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()"
        )
        (writers,) = cursor.fetchone()
        deadline = clock.monotonic() + SETTLE_WAIT
        pause = 0.0005
        while writers:
            cursor.execute(
                "SELECT array_agg(virtualxid) FROM pg_locks WHERE locktype = 'virtualxid' "
                "AND granted AND virtualxid = ANY(%s)",
                [writers],
            )
            (writers,) = cursor.fetchone()
            if not writers:
                break
            if clock.monotonic() > deadline:
                # A transaction that inserted a record and stays open (a test, a shell): leave the
                # watermark where it is and try again next time.
                return -1
            clock.sleep(pause)
            pause = min(pause * 2, 0.05)
    return bound


@dataclass
class _Use:
    accepted: int = 0
    last: tuple = None  # (at, id, ip, user agent) of the newest accepted record


def _fold(conn, rows):
    """Add *rows* (id, token_id, legacy_key_id, at, accepted, ip, user_agent) to the summaries."""
    from .legacy import LegacyApiKey
    from .tokens import Token

    def present(model, ids):
        return set(model.objects.using(conn.alias).filter(pk__in=ids).values_list("pk", flat=True))

    existing = {
        "token": present(Token, {r[1] for r in rows if r[1]}),
        "legacy_key": present(LegacyApiKey, {r[2] for r in rows if r[2]}),
    }
    uses, days, addresses = {}, {}, {}
    for pk, token_id, legacy_key_id, at, accepted, ip, user_agent in rows:
        field, credential = ("token", token_id) if token_id else ("legacy_key", legacy_key_id)
        if credential not in existing[field]:
            continue  # its credential was deleted after the request: nothing to count it for
        key = (field, credential)
        use = uses.setdefault(key, _Use())
        if accepted:
            use.accepted += 1
            if use.last is None or (at, pk) > use.last[:2]:
                use.last = (at, pk, ip, user_agent)
        day = days.setdefault((field, credential, at.astimezone(UTC).date()), [0, 0])
        day[0 if accepted else 1] += 1
        if ip is not None:
            seen = addresses.get((field, credential, ip))
            if seen is None:
                addresses[(field, credential, ip)] = [at, at, user_agent, 1]
            else:
                seen[0] = min(seen[0], at)
                if at >= seen[1]:
                    seen[1], seen[2] = at, user_agent
                seen[3] += 1
    adapt = conn.ops.adapt_datetimefield_value
    newest = "GREATEST" if conn.vendor == "postgresql" else "MAX"
    oldest = "LEAST" if conn.vendor == "postgresql" else "MIN"
    with conn.cursor() as cursor:
        # Credential rows in id order, so two writers holding several never wait for each other in a circle.
        for field, table in (("token", "tokens_token"), ("legacy_key", "tokens_legacyapikey")):
            # Refused-only credentials change nothing here (request_count counts accepted requests).
            counted = sorted(
                (credential, use) for (kind, credential), use in uses.items() if kind == field and use.last
            )
            if counted:
                # last_used_at in every CASE is the row's value before this UPDATE (SQL semantics).
                newer = "last_used_at IS NULL OR last_used_at <= %s"
                cursor.executemany(
                    f"UPDATE {table} SET request_count = request_count + %s, "
                    f"last_used_at = CASE WHEN {newer} THEN %s ELSE last_used_at END, "
                    f"last_used_ip = CASE WHEN {newer} THEN %s ELSE last_used_ip END, "
                    f"last_used_user_agent = CASE WHEN {newer} THEN %s ELSE last_used_user_agent END "
                    "WHERE id = %s",
                    [
                        (use.accepted, *_last_use_params(use.last, adapt), credential)
                        for credential, use in counted
                    ],
                )
        for field in ("token", "legacy_key"):
            day_rows = sorted(
                (credential, day, a, r) for (kind, credential, day), (a, r) in days.items() if kind == field
            )
            if day_rows:
                cursor.executemany(
                    f"INSERT INTO tokens_dailyusage ({field}_id, day, accepted, refused) "
                    "VALUES (%s, %s, %s, %s) "
                    f"ON CONFLICT ({field}_id, day) WHERE {field}_id IS NOT NULL DO UPDATE SET "
                    "accepted = tokens_dailyusage.accepted + excluded.accepted, "
                    "refused = tokens_dailyusage.refused + excluded.refused",
                    [(c, conn.ops.adapt_datefield_value(d), a, r) for c, d, a, r in day_rows],
                )
            address_rows = sorted(
                (credential, ip, *seen) for (kind, credential, ip), seen in addresses.items() if kind == field
            )
            if address_rows:
                cursor.executemany(
                    f"INSERT INTO tokens_clientaddress ({field}_id, ip, first_seen, last_seen, "
                    "last_user_agent, requests) VALUES (%s, %s, %s, %s, %s, %s) "
                    f"ON CONFLICT ({field}_id, ip) WHERE {field}_id IS NOT NULL DO UPDATE SET "
                    f"first_seen = {oldest}(tokens_clientaddress.first_seen, excluded.first_seen), "
                    "last_user_agent = CASE WHEN excluded.last_seen >= tokens_clientaddress.last_seen "
                    "THEN excluded.last_user_agent ELSE tokens_clientaddress.last_user_agent END, "
                    f"last_seen = {newest}(tokens_clientaddress.last_seen, excluded.last_seen), "
                    "requests = tokens_clientaddress.requests + excluded.requests",
                    [
                        (c, ip, adapt(first), adapt(last), agent, n)
                        for c, ip, first, last, agent, n in address_rows
                    ],
                )


def _last_use_params(last, adapt):
    """The CASE parameters of the credential UPDATE for the newest accepted record *last*."""
    at, _pk, ip, agent = last
    return (adapt(at), adapt(at), adapt(at), ip, adapt(at), agent)


summarising = Summariser()


def summarise_after_response(**kwargs):
    """Receive ``request_finished`` (connected in ``TokensConfig.ready``): run a batch if one is due."""
    summarising.after_response()


def _of_newest(column):
    table = UsageRecord._meta.db_table
    return f"(SELECT r.{column} FROM {table} r WHERE r.id = tail.newest) AS {column}"


def usage_totals(credentials):
    """Set each credential's ``request_count`` and last use to summaries + unsummarised records; return them.

    *credentials* are Token or LegacyApiKey instances (one kind). Always three queries, whatever the
    tail holds (one inside ``read_exactly``, which reads the watermark): the watermark, then one
    statement that reads each credential's summarised counters (so they are as old as the tail,
    whenever the instance was loaded) with the count of its accepted records above the watermark (an
    index range on the newest ids) and the newest of them, and the watermark again. The statement
    also reads the watermark: if a summariser moved it in between, the counters hold records the tail
    counted too, and the read is made again (``read_exactly``).
    """
    credentials = [c for c in credentials if c is not None]
    if not credentials:
        return credentials
    model = type(credentials[0])
    column = "token_id" if credentials[0].event_field == "token" else "legacy_key_id"
    by_id = {c.pk: c for c in credentials}
    records = UsageRecord._meta.db_table
    placeholders = ", ".join(["%s"] * len(by_id))
    # COALESCE keeps the credential's index out of the tail (UsageRecordQuerySet.unsummarised), also
    # from the equality PostgreSQL derives from the join and c.id = %s.
    unindexed = f"COALESCE({column}, {column})"
    # Scalar subqueries, not a join, for the newest record's columns: each is one probe of the primary
    # key, where a join may be planned as a hash of a whole partition when the tail looks long.
    sql = (
        f"SELECT c.id, c.request_count, c.last_used_at, c.last_used_ip, c.last_used_user_agent, tail.n, "
        f"{_of_newest('at')}, {_of_newest('ip')}, {_of_newest('user_agent')}, ({_WATERMARK}) "
        f"FROM {model._meta.db_table} c "
        f"LEFT JOIN (SELECT {unindexed} AS credential, COUNT(*) AS n, MAX(id) AS newest FROM {records} "
        f"WHERE id > %s AND accepted = %s AND {unindexed} IN ({placeholders}) GROUP BY {unindexed}) tail "
        f"ON tail.credential = c.id "
        f"WHERE c.id IN ({placeholders})"
    )

    def read():
        through = _tail_from(DEFAULT_DB_ALIAS)
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(sql, [through, True, *by_id, *by_id])
            rows = cursor.fetchall()
        if any((watermark or 0) != through for *_row, watermark in rows):
            raise WatermarkMoved
        for pk, count, at, ip, agent, tail_count, tail_at, tail_ip, tail_agent, _watermark in rows:
            credential = by_id[pk]
            credential.request_count = count + (tail_count or 0)
            credential.last_used_at, credential.last_used_ip = _aware(at), ip
            credential.last_used_user_agent = agent
            tail_at = _aware(tail_at)
            if tail_at is not None and (
                credential.last_used_at is None or tail_at >= credential.last_used_at
            ):
                credential.last_used_at, credential.last_used_ip = tail_at, tail_ip
                credential.last_used_user_agent = tail_agent

    read_exactly(read)
    return credentials


_WATERMARK = "SELECT summarised_through FROM tokens_usagesummarystate WHERE id = 1"

# Set by read_exactly: the watermark every reader inside uses, read once.
_pinned_watermark = contextvars.ContextVar("pinned_watermark", default=None)


class WatermarkMoved(Exception):
    """A summariser committed while the readers were reading: summaries and tail may overlap."""


def _tail_from(alias):
    pinned = _pinned_watermark.get()
    return pinned if pinned is not None else UsageRecord.objects.using(alias).summarised_through()


def read_exactly(read, *, attempts=3):
    """Return ``read()``, its summaries and unsummarised tails read as of one watermark.

    The readers take the summaries and the records above the watermark in separate statements, and a
    summariser batch moves the watermark in the same transaction as the summaries it changes.

    SQLite (outside a transaction): *read* runs in one deferred read transaction, which in WAL mode
    sees one snapshot of the database from its first statement to its end, so every statement sees the
    same watermark, summaries and tail, whatever commits meanwhile. It takes no lock: summariser
    batches and usage INSERTs go on, and the read never waits for them (holding the writers' turn
    instead, a reader waited for seconds behind a summariser in a loop, since a file lock is not a
    queue).

    Otherwise: if the watermark is the same after *read* as before, every statement in between saw the
    same summaries and the tails start where they end: nothing is counted twice or missed. Otherwise (a
    batch committed meanwhile, which takes milliseconds) *read* runs again. After *attempts* (summarisers
    busy in a loop), it runs once more holding the watermark, so that no batch can commit meanwhile.

    Inside, the readers share the watermark read here (one query, not one each); a reader that sees it
    has moved raises WatermarkMoved to cut the attempt short. *read* must be safe to run again: it
    only reads.
    """
    if _pinned_watermark.get() is not None:
        return read()  # an outer read_exactly checks
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor == "sqlite" and not conn.in_atomic_block:
        with _sqlite_snapshot(conn):
            return _read_pinned(read)
    for _attempt in range(attempts):
        before = UsageRecord.objects.summarised_through()
        try:
            result = _read_pinned(read, before)
        except WatermarkMoved:
            continue
        if UsageRecord.objects.summarised_through() == before:
            return result
    with _watermark_held():
        return _read_pinned(read)


def _read_pinned(read, watermark=None):
    """Run *read* with every reader inside using *watermark* (by default: read it now)."""
    if watermark is None:
        watermark = UsageRecord.objects.summarised_through()
    pinned = _pinned_watermark.set(watermark)
    try:
        return read()
    finally:
        _pinned_watermark.reset(pinned)


@contextmanager
def _sqlite_snapshot(conn):
    """Run the block in a deferred transaction: WAL's snapshot, without the write lock.

    The database's transactions are IMMEDIATE (they take the write lock at BEGIN, settings.py); a read
    needs none, so this one BEGINs DEFERRED. ``ensure_connection`` first: connecting sets the mode again.
    """
    conn.ensure_connection()
    mode = conn.transaction_mode
    conn.transaction_mode = "DEFERRED"
    try:
        with transaction.atomic(using=conn.alias):
            conn.transaction_mode = mode
            yield
    finally:
        conn.transaction_mode = mode


@contextmanager
def _watermark_held():
    """Keep summariser batches from committing while the block reads.

    PostgreSQL: the watermark row ``FOR SHARE``, which summarisers (``FOR UPDATE SKIP LOCKED``) pass
    by and ``prune_usage`` waits for; the block takes no other lock (docs/security.md, "Lock order",
    step 0). SQLite (inside a transaction, which holds the write lock already): a savepoint.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor == "sqlite":
        with transaction.atomic():
            yield
    else:
        with transaction.atomic(), conn.cursor() as cursor:
            cursor.execute(f"{_WATERMARK} FOR SHARE")
            yield


def token_usage(token, *, addresses):
    """Return what a token's page and the usage API show of its use, all as of one watermark.

    Sets the token's counters and last use (``usage_totals``) and returns (the 30 days of
    ``DailyUsageQuerySet.series``, (address count, the newest *addresses* client addresses)).
    """

    def read():
        usage_totals([token])
        tail = UsageRecord.objects.unsummarised(token=token)
        return (
            DailyUsage.objects.filter(token=token).series(tail=tail),
            client_addresses(ClientAddress.objects.filter(token=token), tail, limit=addresses),
        )

    return read_exactly(read)


def client_addresses(addresses, tail, *, limit, related=()):
    """Return (count, rows): the ClientAddress queryset *addresses* with the records of *tail* folded in.

    *tail* is the unsummarised records of the same credentials
    (``UsageRecord.objects.unsummarised(token=…)``). The rows are the newest *limit* by
    last use, as ``addresses.order_by("-last_seen")[:limit]`` would give once summarised. Always three
    queries (the tail's addresses, the count, the rows), plus one per *related* lookup prefetched.
    """
    tail_sql, tail_params = (
        tail.exclude(ip=None)
        .values("token_id", "legacy_key_id", "ip")
        .annotate(first=Min("at"), last=Max("at"), n=Count("pk"), newest=Max("pk"))
        .order_by()
        .query.sql_with_params()
    )
    # The user agent of each address's newest record, in the same query.
    tail = list(
        UsageRecord.objects.raw(
            f"SELECT tail.newest AS id, {_of_newest('user_agent')}, tail.token_id AS tail_token, "
            f"tail.legacy_key_id AS tail_key, tail.ip AS tail_ip, tail.first AS tail_first, "
            f"tail.last AS tail_last, tail.n AS tail_n FROM ({tail_sql}) tail",
            tail_params,
        )
    )
    count = addresses.count()
    newest_first = addresses.order_by("-last_seen", "-id")
    # Stored rows: the newest *limit*, and every stored row a tail address adds to (matched against all
    # stored addresses, not only *addresses*: a filtered set, such as recent ones, may not hold it).
    pairs = Q(pk__in=newest_first.values("pk")[:limit])
    for row in tail:
        pairs |= Q(token_id=row.tail_token, legacy_key_id=row.tail_key, ip=row.tail_ip)
    stored = ClientAddress.objects.filter(pairs)
    if related:
        stored = stored.select_related(*related)
    by_key = {(row.token_id, row.legacy_key_id, row.ip): row for row in stored}
    for row in tail:
        first, last = _aware(row.tail_first), _aware(row.tail_last)
        address = by_key.get((row.tail_token, row.tail_key, row.tail_ip))
        if address is None:
            address = ClientAddress(
                token_id=row.tail_token,
                legacy_key_id=row.tail_key,
                ip=row.tail_ip,
                first_seen=first,
                last_seen=last,
                last_user_agent=row.user_agent,
                requests=0,
            )
            by_key[(row.tail_token, row.tail_key, row.tail_ip)] = address
            count += 1
        else:
            address.first_seen = min(address.first_seen, first)
            if last >= address.last_seen:
                address.last_seen, address.last_user_agent = last, row.user_agent
        address.requests += row.tail_n
    merged = sorted(by_key.values(), key=lambda address: (address.last_seen, address.pk or 0), reverse=True)
    merged = merged[:limit]
    if related:
        prefetch_related_objects(merged, *related)
    return count, merged


def _aware(value):
    """A datetime (or None) from a raw query's column (SQLite gives text, naive UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)
