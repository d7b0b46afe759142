"""The summariser: fold usage records into the credentials' counters, the daily totals and client addresses.

Run from cron (``summarise_usage``), by ``prune_usage`` before it deletes, and now and then by every
process after a response (``summarise_after_response``). Each batch moves the watermark
(UsageSummaryState) in the same transaction as the summaries it changes.
"""

import logging
import threading
import time as clock
from dataclasses import dataclass
from datetime import UTC

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Min
from django.utils import timezone

from .. import metrics
from ..models import ClientAddress, DailyUsage, LegacyApiKey, Token, UsageRecord, UsageSummaryState
from . import sqlite_turns

# Logged under the store's established name, which operators' log filters and alerts match.
log = logging.getLogger("tokens.models.usage")

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
            with sqlite_turns.queued_transaction(conn):
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
    table = UsageRecord._meta.db_table
    if conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            return cursor.fetchone()[0]
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT last_value, is_called FROM {table}_id_seq")
        last_value, is_called = cursor.fetchone()
        bound = last_value if is_called else last_value - 1
        cursor.execute(
            "SELECT array_agg(DISTINCT virtualtransaction) FROM pg_locks WHERE relation = %s::regclass "
            "AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()",
            [table],
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
    daily, addressed = DailyUsage._meta.db_table, ClientAddress._meta.db_table
    with conn.cursor() as cursor:
        # Credential rows in id order, so two writers holding several never wait for each other in a circle.
        for field, table in (("token", Token._meta.db_table), ("legacy_key", LegacyApiKey._meta.db_table)):
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
                    f"INSERT INTO {daily} ({field}_id, day, accepted, refused) "
                    "VALUES (%s, %s, %s, %s) "
                    f"ON CONFLICT ({field}_id, day) WHERE {field}_id IS NOT NULL DO UPDATE SET "
                    f"accepted = {daily}.accepted + excluded.accepted, "
                    f"refused = {daily}.refused + excluded.refused",
                    [(c, conn.ops.adapt_datefield_value(d), a, r) for c, d, a, r in day_rows],
                )
            address_rows = sorted(
                (credential, ip, *seen) for (kind, credential, ip), seen in addresses.items() if kind == field
            )
            if address_rows:
                cursor.executemany(
                    f"INSERT INTO {addressed} ({field}_id, ip, first_seen, last_seen, "
                    "last_user_agent, requests) VALUES (%s, %s, %s, %s, %s, %s) "
                    f"ON CONFLICT ({field}_id, ip) WHERE {field}_id IS NOT NULL DO UPDATE SET "
                    f"first_seen = {oldest}({addressed}.first_seen, excluded.first_seen), "
                    f"last_user_agent = CASE WHEN excluded.last_seen >= {addressed}.last_seen "
                    f"THEN excluded.last_user_agent ELSE {addressed}.last_user_agent END, "
                    f"last_seen = {newest}({addressed}.last_seen, excluded.last_seen), "
                    f"requests = {addressed}.requests + excluded.requests",
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


def summarise(*, batch_size=None, max_batches=None, wait=False, using=DEFAULT_DB_ALIAS):
    """Fold the records above the watermark into the summaries; return how many were folded in.

    Bounded batches, each one short transaction that updates the summaries and moves the watermark
    together, so a batch counts once or not at all (idempotent; a crash loses nothing). Safe with
    several processes and nodes at once: the watermark row is taken with ``FOR UPDATE SKIP LOCKED``
    on PostgreSQL (a second summariser finds it taken and returns 0) and under SQLite's write
    lock (``BEGIN IMMEDIATE``) on SQLite. Stops when a batch comes back short, or after
    *max_batches*. With *wait*, it waits for a summariser running elsewhere instead of returning
    (``prune_usage``, which must not delete what is not summarised yet).
    """
    return summarising.summarise(using, batch_size=batch_size, max_batches=max_batches, wait=wait)


def summarise_after_response(**kwargs):
    """Receive ``request_finished`` (connected in ``TokensConfig.ready``): run a batch if one is due."""
    summarising.after_response()
