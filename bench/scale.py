"""The usage store's two scaling measurements: a hot token, and dropping a day of records (retention).

* **Hot token**: gunicorn with ``BENCH_HOT_WORKERS`` (8) sync workers; wrk with 8 threads of one
  connection each. In turns: all eight send the same token, then each sends its own (eight tokens of
  eight owners). The ratio shared ÷ spread shows whether requests for one token queue behind each
  other (as they would if each request updated the token's row, its day row and its address row).
* **Retention**: ``BENCH_RETENTION_RECORDS`` (1,000,000) records are loaded into one day, 100 days
  back (past the default retention of 90), and summarised; then ``prune_usage`` runs while another
  thread keeps recording usage, and the table shows how long the prune took and the slowest of the
  recording INSERTs meanwhile. PostgreSQL drops the day's partition; SQLite deletes in batches.

Run by ``bench/bench.py``, which sets Django up before it imports this module.
"""

import io
import json
import os
import statistics
import subprocess
import threading
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.utils import timezone

from bench.harness import BENCH_DIR, start_server, stop_server
from tokens.models import Token, UsageRecord
from tokens.usage import partitions as usage_partitions
from tokens.usage.record import record as record_usage
from tokens.usage.summarise import summarise

HOT_WORKERS = int(os.environ.get("BENCH_HOT_WORKERS", "8"))
RETENTION_RECORDS = int(os.environ.get("BENCH_RETENTION_RECORDS", "1000000"))


def _wrk(port, tokens, seconds):
    command = [
        "wrk",
        "-t8",
        "-c8",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH_DIR / "hot.lua"),
        f"http://127.0.0.1:{port}/api/users/me",
    ]
    env = {**os.environ, "BENCH_TOKENS": " ".join(tokens)}
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    summary = json.loads(next(line for line in output.splitlines() if line.startswith("BENCH "))[6:])
    if summary["non2xx"]:
        raise SystemExit(f"hot token: {summary['non2xx']} of {summary['requests']} answers were not 200")
    return summary["requests"] / (summary["duration_us"] / 1e6), summary["p99_us"] / 1000


def hot_token(port, *, rounds, seconds):
    """Return report lines: req/s with one token shared by 8 clients and with one token per client."""
    expires_at = timezone.now() + timedelta(days=1)
    values = []
    for n in range(8):
        owner = get_user_model().objects.create_user(f"bench-hot-{n}")
        values.append(Token.objects.issue(user=owner, name="hot", expires_at=expires_at)[1])
    server = start_server(port, HOT_WORKERS)
    shared, spread = [], []
    try:
        _wrk(port, values, 1)  # warm up every worker's connection
        for turn in range(rounds):
            order = [(shared, values[:1]), (spread, values)]
            for results, tokens in order if turn % 2 == 0 else reversed(order):
                results.append(_wrk(port, tokens, seconds))
    finally:
        stop_server(server)
    ratio = statistics.median(s[0] / p[0] for s, p in zip(shared, spread, strict=False))
    rate = {
        name: statistics.median(r for r, _p99 in results) for name, results in (("s", shared), ("p", spread))
    }
    p99 = {
        name: statistics.median(p for _r, p in results) for name, results in (("s", shared), ("p", spread))
    }
    return [
        "",
        f"Hot token (gunicorn sync × {HOT_WORKERS} workers, wrk -t8 -c8, {rounds} rounds × {seconds} s each, "
        "in turns; median of rounds):",
        "",
        "| clients send | req/s | p99 ms |",
        "| --- | ---: | ---: |",
        f"| one token, shared by all 8 | {rate['s']:,.0f} | {p99['s']:.2f} |",
        f"| eight tokens, one per client | {rate['p']:,.0f} | {p99['p']:.2f} |",
        "",
        f"One token shared ÷ one per client: {ratio:.2f}× (target ≥ 0.9×, PostgreSQL).",
    ]


def _load_day(token, day_start, count):
    columns = (
        "token_id, legacy_key_id, user_id, at, accepted, method, path, status, ip, user_agent, duration_ms"
    )
    step = 86_000 / count  # seconds between records, all inside the day
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            usage_partitions.create_day(cursor, day_start.date())
            cursor.execute(
                f"INSERT INTO tokens_usagerecord ({columns}) "
                "SELECT %s, NULL, %s, %s + i * %s * interval '1 second', "
                "true, 'GET', '/api/users/me', 200, '192.0.2.7', 'bench-retention', 1.0 "
                "FROM generate_series(0, %s) AS i",
                [token.pk, token.user_id, day_start, step, count - 1],
            )
        else:
            connection.connection.execute(
                "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :last) "
                f"INSERT INTO tokens_usagerecord ({columns}) SELECT :token, NULL, :user, "
                "strftime('%Y-%m-%d %H:%M:%f', :start, '+' || (i * :step) || ' seconds'), 1, 'GET', "
                "'/api/users/me', 200, '192.0.2.7', 'bench-retention', 1.0 FROM seq",
                {
                    "last": count - 1,
                    "token": token.pk,
                    "user": token.user_id,
                    "start": day_start.strftime("%Y-%m-%d %H:%M:%S"),
                    "step": step,
                },
            )


def retention():
    """Return report lines: prune_usage on a day of RETENTION_RECORDS records while requests are recorded."""
    owner = get_user_model().objects.create_user("bench-retention")
    token, _value = Token.objects.issue(
        user=owner, name="retention", expires_at=timezone.now() + timedelta(days=1)
    )
    day_start = (timezone.now() - timedelta(days=100)).replace(hour=0, minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    _load_day(token, day_start, RETENTION_RECORDS)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    summarise()
    summarise_s = time.perf_counter() - started

    stop = threading.Event()
    latencies = []

    def record():
        try:
            while not stop.is_set():
                began = time.perf_counter()
                record_usage(
                    token_id=token.pk,
                    user_id=owner.pk,
                    at=timezone.now(),
                    accepted=True,
                    method="GET",
                    path="/api/users/me",
                    status=200,
                    ip="192.0.2.8",
                    user_agent="bench-retention-live",
                    duration_ms=1.0,
                )
                latencies.append(time.perf_counter() - began)
        finally:
            connections.close_all()

    recorder = threading.Thread(target=record)
    recorder.start()
    time.sleep(0.5)
    before = len(latencies)
    started = time.perf_counter()
    try:
        call_command("prune_usage", stdout=io.StringIO())
    finally:
        prune_s = time.perf_counter() - started
        during = latencies[before:]
        stop.set()
        recorder.join()
    left = UsageRecord.objects.filter(token=token, at__lt=day_start + timedelta(days=1)).count()
    how = "drops the day's partition" if connection.vendor == "postgresql" else "deletes in batches of 5,000"
    slowest = max(during) * 1000 if during else float("nan")
    return [
        "",
        f"Retention: one day of {RETENTION_RECORDS:,} records 100 days back (loaded in {load_s:.1f} s, "
        f"summarised in {summarise_s:.1f} s: {RETENTION_RECORDS / summarise_s:,.0f} records/s); "
        f"prune_usage {how} while a thread keeps recording usage:",
        "",
        "| prune_usage | records left from that day | usage INSERTs meanwhile | median INSERT ms "
        "| slowest INSERT ms |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {prune_s:.2f} s | {left:,} | {len(during):,} | "
        f"{(statistics.median(during) * 1000 if during else float('nan')):.2f} | {slowest:.1f} |",
    ]
