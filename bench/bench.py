"""Benchmark the API's authentication paths against knox and DRF on one database.

Run by ``bash bench/run`` (``make bench``), which prepares the virtualenv, the database and wrk:

    bench/.venv/bin/python -m bench.bench --database sqlite --port 56xxx

Every path runs on the same gunicorn server (bench.knoxsite.settings: the portal plus knox and DRF
views), sync workers, two of them. wrk loads one path at a time; the paths take turns in rounds so
that noise from the shared machine spreads over all of them, and every ratio compares numbers from
the same run. Before the load, a direct WSGI call loop measures µs/request and counts the queries
(and PostgreSQL health-check round trips) each path costs in-process; in the same rounds, the bearer
request's lookup and its usage record are also timed alone, which gives the cost of recording as a
ratio. Last, a token's page is timed with a thousand and with a million usage records
(``bench/pages.py``), and the hot-token and retention scenarios run (``bench/scale.py``).
"""

import argparse
import io
import os
import secrets
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import django

# The portal plus knox and DRF, chosen before Django loads: the imports below need it set up.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.knoxsite.settings"
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Permission  # noqa: E402
from django.core.handlers.wsgi import WSGIRequest  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db import connections as db_connections  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from knox.models import AuthToken  # noqa: E402
from rest_framework.authtoken.models import Token as DrfToken  # noqa: E402

from bench.harness import Case, load, rotated  # noqa: E402
from bench.knoxsite.wsgi import application as app  # noqa: E402
from bench.pages import page_scaling  # noqa: E402
from bench.scale import hot_token, retention  # noqa: E402
from tokens.auth import authenticate  # noqa: E402
from tokens.http import client_ip  # noqa: E402
from tokens.models import LegacyApiKey, Token, UsageRecord  # noqa: E402
from tokens.usage.read import usage_totals  # noqa: E402
from tokens.usage.record import record as record_usage  # noqa: E402


@dataclass
class Piece:
    """One step of the bearer request, timed alone in-process in the same rounds as the paths."""

    key: str
    label: str
    run: object  # callable doing the step once
    micros: list = field(default_factory=list)  # µs per call, one per round
    calls: int = 0


def prepare():
    """Migrate, then make one user with a bearer token, a legacy key, a knox token and a DRF token."""
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", email="bench@example.com")
    expires_at = timezone.now() + timedelta(days=1)
    _token, bearer = Token.objects.issue(user=user, name="bench", expires_at=expires_at)
    # The design-limit view's own token, so that its records leave the bench token's counts exact.
    _limit, limit = Token.objects.issue(user=user, name="bench-limit", expires_at=expires_at)
    # Least privilege: read-only, narrowed to one permission the owner holds, and an allow-list whose
    # matching entry (loopback, where wrk and the in-process calls come from) is the last of ten.
    user.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    _restricted, restricted = Token.objects.issue(
        user=user,
        name="bench-restricted",
        expires_at=expires_at,
        access="read",
        permissions=["auth.view_user"],
        allowed_ips=[f"198.51.100.{i}" for i in range(1, 5)]
        + [f"2001:db8::{i}" for i in range(1, 5)]
        + ["::1", "127.0.0.0/8"],
    )
    legacy = "legacy-" + secrets.token_urlsafe(24)
    LegacyApiKey.objects.import_key(user=user, key=legacy)
    _knox, knox = AuthToken.objects.create(user=user)
    drf = DrfToken.objects.create(user=user).key
    # Same shape and public id as the real token, signature changed: refused before any query.
    forged = bearer[:-8] + ("A" * 8 if not bearer.endswith("A" * 8) else "B" * 8)
    return [
        Case("none", "no credentials (401)", "/api/users/me", status=401),
        Case("forged", "forged bearer (401)", "/api/users/me", "Authorization", f"Bearer {forged}", 401),
        Case("bearer", "bearer, usage recorded", "/api/users/me", "Authorization", f"Bearer {bearer}"),
        Case(
            "restricted",
            "bearer read-only + allow-list + narrowed, recorded",
            "/api/users/me",
            "Authorization",
            f"Bearer {restricted}",
        ),
        Case(
            "unrecorded",
            "bearer, not recorded (bench only)",
            "/bench/bearer-unrecorded/me",
            "Authorization",
            f"Bearer {bearer}",
        ),
        Case(
            "limit",
            "design limit, the portal's middleware",
            "/bench/limit/me",
            "Authorization",
            f"Bearer {limit}",
        ),
        Case(
            "limit_minimal",
            "design limit, a JSON API's middleware",
            "/bench/limit-minimal/me",
            "Authorization",
            f"Bearer {limit}",
        ),
        Case("legacy", "legacy key, usage recorded", "/api/users/me", "Rest-Api-Key", legacy),
        Case("knox", "knox TokenAuthentication", "/bench/knox/me", "Authorization", f"Token {knox}"),
        Case("drf", "DRF TokenAuthentication", "/bench/drf/me", "Authorization", f"Token {drf}"),
    ]


# --- in-process -------------------------------------------------------------------------------------------


def _environ(path):
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.url,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_USER_AGENT": "portal-bench",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    if path.header:
        environ["HTTP_" + path.header.upper().replace("-", "_")] = path.value
    return environ


def bearer_pieces(environ):
    """Return the lookup and the usage record of the valid-bearer request, each as a Piece to time alone.

    Both get what the middleware gives them for that request: ``authenticate`` the request, and
    ``tokens.usage.record.record`` the same keyword arguments (credential, client address, method,
    path, status, user agent), in autocommit mode like the middleware, outside any transaction.
    """
    request = WSGIRequest({**environ, "wsgi.input": io.BytesIO()})
    credential = authenticate(request)
    ip = client_ip(request)
    user_agent = request.META.get("HTTP_USER_AGENT", "")
    started = time.perf_counter()

    def lookup():
        authenticate(request)

    def record():
        # No transaction: in one, record() keeps the durable commit and would measure something else.
        assert not connection.in_atomic_block
        record_usage(
            token_id=credential.id,
            legacy_key_id=None,
            user_id=credential.user.pk,
            at=timezone.now(),
            accepted=True,
            method=request.method,
            path=request.path,
            status=200,
            ip=ip,
            user_agent=user_agent,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    return [
        Piece("lookup", "lookup alone (authenticate)", lookup),
        Piece("record", "usage record alone (tokens.usage.record)", record),
    ]


def in_process(paths, *, rounds, seconds):
    """Fill each path's µs/request (per round), queries and round trips, calling the WSGI app directly.

    Return the bearer request's lookup and usage record, each timed alone in the same rounds.
    """
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(int(status[:3]))

    def call(path):
        path.calls += 1
        result = app({**environs[path.key], "wsgi.input": io.BytesIO()}, start_response)
        try:
            b"".join(result)
        finally:
            result.close()  # fires request_finished, as gunicorn does

    # Django's query log misses the health check's SELECT 1 (it bypasses the cursor wrapper): count it.
    health_checks = []
    is_usable = connection.is_usable

    def counted_is_usable():
        health_checks.append(1)
        return is_usable()

    environs = {p.key: _environ(p) for p in paths}
    for path in paths:
        call(path)  # warm up (first-use events, caches, connection)
        statuses.clear()
        health_checks.clear()
        connection.is_usable = counted_is_usable
        try:
            # Every alias: on SQLite the usage INSERT goes through a connection of its own.
            with ExitStack() as stack:
                queries = [stack.enter_context(CaptureQueriesContext(c)) for c in db_connections.all()]
                call(path)
        finally:
            del connection.is_usable
        if statuses != [path.status]:
            raise SystemExit(f"{path.label}: expected {path.status}, got {statuses}")
        path.queries = sum(len(captured) for captured in queries)
        path.round_trips = path.queries + len(health_checks)

    pieces = bearer_pieces(environs["bearer"])

    def once(item):
        if isinstance(item, Piece):
            item.calls += 1
            item.run()
        else:
            call(item)

    # Calibrate a loop length per path and piece, then time them all in turns: a piece runs between
    # the paths, so it meets the same machine noise, cache state and WAL checkpoints as they do.
    items = [*paths, *pieces]
    counts = {}
    for item in items:
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 0.2:
            once(item)
            n += 1
        counts[item.key] = max(20, int(n / 0.2 * seconds))
    for turn in range(rounds):
        for item in rotated(items, turn):
            n = counts[item.key]
            started = time.perf_counter()
            for _ in range(n):
                once(item)
            item.micros.append((time.perf_counter() - started) / n * 1e6)
    connection.close()
    return pieces


def check_counts():
    """Return (recorded, rows) for the bench token: its count as the pages read it, and the raw records."""

    token = usage_totals([Token.objects.get(name="bench")])[0]
    return token.request_count, UsageRecord.objects.filter(token=token, accepted=True).count()


# --- report -----------------------------------------------------------------------------------------------


def rps(path):
    return statistics.median(s["requests"] / (s["duration_us"] / 1e6) for s in path.wrk)


def recording_cost(bearer, pieces):
    """Return lines on what recording costs the bearer request, in-process.

    Every ratio is taken within one round (the paths and pieces of a round ran back to back), and
    the median of those per-round ratios is shown; µs are medians of the rounds.
    """
    by = {p.key: p for p in pieces}
    lookup, record = by["lookup"], by["record"]
    rounds = list(zip(bearer.micros, lookup.micros, record.micros, strict=False))

    def median(values):
        return statistics.median(list(values))

    full_us, lookup_us, record_us = (median(column) for column in zip(*rounds, strict=False))
    times_lookup = median(r / lk for _b, lk, r in rounds)
    share = median(r / b for b, _lk, r in rounds)
    with_without = median(b / (b - r) for b, _lk, r in rounds)
    return [
        "",
        "Cost of recording (in-process, same rounds as the table; µs: median of rounds, "
        "ratios: median of per-round ratios):",
        "",
        "| in-process | µs |",
        "| --- | ---: |",
        f"| {bearer.label}: the full request through the WSGI app | {full_us:,.0f} |",
        f"| {lookup.label} | {lookup_us:,.0f} |",
        f"| {record.label} | {record_us:,.0f} |",
        f"| bearer request without the recording (full − record) | {full_us - record_us:,.0f} |",
        "",
        f"usage recording: {record_us:,.0f} µs per request = {times_lookup:.2f}× the lookup, "
        f"{share:.0%} of a recorded bearer request; recorded bearer ÷ the same request without "
        f"recording = {with_without:.2f}×",
    ]


def report(paths, *, database, rounds, seconds, connections, workers, counts, pieces):
    by = {p.key: p for p in paths}
    base, knox, limit, minimal = by["none"], by["knox"], by["limit"], by["limit_minimal"]
    base_rps, knox_rps, limit_rps, minimal_rps = rps(base), rps(knox), rps(limit), rps(minimal)
    base_us, limit_us = statistics.median(base.micros), statistics.median(limit.micros)
    lines = [
        f"### {database}",
        "",
        f"gunicorn sync × {workers} workers, wrk -t1 -c{connections}, "
        f"{rounds} rounds × {seconds} s per path "
        "(median of rounds); in-process: direct WSGI calls, median of rounds.",
        "",
        "| path | req/s | p50 ms | p99 ms | × no-cred | × knox | × limit | × limit (minimal) "
        "| in-process µs | µs × no-cred | µs × limit | queries | round trips |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in paths:
        r = rps(path)
        us = statistics.median(path.micros)
        p50 = statistics.median(s["p50_us"] for s in path.wrk) / 1000
        p99 = statistics.median(s["p99_us"] for s in path.wrk) / 1000
        lines.append(
            f"| {path.label} | {r:,.0f} | {p50:.2f} | {p99:.2f} | {r / base_rps:.2f} | {r / knox_rps:.2f} "
            f"| {r / limit_rps:.2f} | {r / minimal_rps:.2f} "
            f"| {us:,.0f} | {us / base_us:.2f} | {us / limit_us:.2f} | {path.queries} | {path.round_trips} |"
        )
    bearer, forged = by["bearer"], by["forged"]
    checks = [
        ("bearer ≥ 0.90× the design limit, same middleware (req/s)", rps(bearer) / limit_rps, 0.9),
        # No goal: what the middleware stack costs on top of our code, shown beside it.
        ("bearer ÷ the design limit, a JSON API's middleware (req/s)", rps(bearer) / minimal_rps, None),
        ("bearer ≥ 0.5× no-credentials (req/s)", rps(bearer) / base_rps, 0.5),
        ("bearer ≥ 1.7× knox (req/s)", rps(bearer) / knox_rps, 1.7),
        ("forged ≥ 0.9× no-credentials (req/s)", rps(forged) / base_rps, 0.9),
        ("restricted bearer ≥ 0.9× bearer (req/s)", rps(by["restricted"]) / rps(bearer), 0.9),
    ]
    lines += ["", "| target | measured | met |", "| --- | ---: | --- |"]
    for name, value, goal in checks:
        met = "—" if goal is None else "yes" if value >= goal else "no"
        lines.append(f"| {name} | {value:.2f}× | {met} |")
    # In-process, each ratio is the median of the per-round ratios: the two ran back to back.
    in_process_ratio = statistics.median(b / n for b, n in zip(bearer.micros, base.micros, strict=True))
    limit_ratio = statistics.median(b / lm for b, lm in zip(bearer.micros, limit.micros, strict=True))
    lines.append(
        f"| bearer in-process ≤ 2.6× no-credentials (µs) | {in_process_ratio:.2f}× | "
        f"{'yes' if in_process_ratio <= 2.6 else 'no'} |"
    )
    lines.append(f"| bearer in-process ÷ the design limit, same middleware (µs) | {limit_ratio:.2f}× | — |")
    no_query = "yes" if forged.queries == 0 else "no"
    lines.append(f"| forged token: no query | {forged.queries} queries | {no_query} |")
    lines += recording_cost(bearer, pieces)
    unrecorded = by["unrecorded"]
    lines += [
        "",
        f"Under load, recording takes: bearer with its usage recorded {rps(bearer):,.0f} req/s ÷ the same "
        f"check unrecorded {rps(unrecorded):,.0f} req/s = {rps(bearer) / rps(unrecorded):.2f}× "
        f"(unrecorded: {rps(unrecorded) / base_rps:.2f}× no-credentials, "
        f"{rps(unrecorded) / knox_rps:.2f}× knox).",
    ]
    recorded, rows = counts
    answered = bearer.calls + sum(s["requests"] for s in bearer.wrk)
    # The usage-record piece wrote records for the bench token without a request.
    direct = next(p.calls for p in pieces if p.key == "record")
    in_flight = connections * bearer.runs
    exact = rows == recorded and answered + direct <= recorded <= answered + direct + in_flight
    lines += [
        "",
        f"Usage exactness ({'exact' if exact else 'NOT EXACT'}): "
        f"the bench token's request_count is {recorded:,} "
        f"and it has {rows:,} accepted usage records; {answered:,} bearer requests were answered, "
        f"{direct:,} records were written directly by the cost-of-recording loop, and wrk "
        f"stopped with at most {in_flight:,} more in flight "
        "(sent, served and recorded, but not counted by wrk).",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="label for the table (sqlite, postgresql)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 4)))
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # A stop request (Ctrl-C, SIGTERM) unwinds normally, so the gunicorn server is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    paths = prepare()
    pieces = in_process(paths, rounds=args.rounds, seconds=min(1.0, args.seconds / 5))
    load(
        paths,
        port=args.port,
        rounds=args.rounds,
        seconds=args.seconds,
        connections=args.connections,
        workers=args.workers,
    )
    text = report(
        paths,
        database=args.database,
        rounds=args.rounds,
        seconds=args.seconds,
        connections=args.connections,
        workers=args.workers,
        counts=check_counts(),
        pieces=pieces,
    )
    text += "\n" + "\n".join(page_scaling())
    text += "\n" + "\n".join(hot_token(args.port, rounds=args.rounds, seconds=args.seconds))
    text += "\n" + "\n".join(retention())
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
