"""The usage store's exact reads: summaries plus the records not summarised yet, as of one watermark.

A credential's counters and last use (``usage_totals``), its days and client addresses
(``token_usage``, ``client_addresses``): each adds the unsummarised tail to what the summaries hold,
inside ``read_exactly`` so that a summariser batch committing meanwhile counts nothing twice.
"""

from contextlib import contextmanager
from datetime import UTC, datetime

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Count, Max, Min, Q, prefetch_related_objects

from ..models import ClientAddress, DailyUsage, UsageRecord, UsageSummaryState
from ..models.usage import pinned_watermark


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
        through = UsageRecord.objects.tail_start()
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


_WATERMARK = f"SELECT summarised_through FROM {UsageSummaryState._meta.db_table} WHERE id = 1"


class WatermarkMoved(Exception):
    """A summariser committed while the readers were reading: summaries and tail may overlap."""


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
    if pinned_watermark.get() is not None:
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
    pinned = pinned_watermark.set(watermark)
    try:
        return read()
    finally:
        pinned_watermark.reset(pinned)


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
