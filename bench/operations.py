"""Benchmark what operations cost the hot path: metrics and JSON logs on, against both off, in one run.

Run by ``bash bench/run`` (``make bench``) after bench.bench, on the same database:

    bench/.venv/bin/python -m bench.operations --database sqlite --port 56xxx --port-off 56yyy

Two gunicorn servers (two sync workers each) serve the same database at once, each with an access log
in a file, as in production:

* off: ``METRICS_ENABLED=false`` and the text access log;
* on: metrics counted (prometheus-client's multiprocess files) and ``LOG_FORMAT=json``.

wrk loads the recorded bearer path (``GET /api/users/me``) on one and then the other, taking turns in
rounds, so the shared machine's noise falls on both alike. Then ``/metrics`` is timed on the "on" server
with 100,000 tokens in the database (made here once, with bulk inserts: the scrape reads none of them,
which is the point of measuring it with many).
"""

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import django

# Chosen before Django loads: the imports below need it set up. Counted in this process as gunicorn's
# workers count: into prometheus-client's multiprocess files.
os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portal-bench-metrics-")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.harness import ROOT, Case, stop_server, wrk  # noqa: E402
from portal.logs import json_formatter  # noqa: E402
from tokens import credentials, metrics  # noqa: E402
from tokens.models import Token  # noqa: E402

TOKENS = 100_000


def prepare():
    """Migrate; make the bench user's token and, once, 100,000 more tokens; return the token's value."""
    call_command("migrate", verbosity=0)
    User = get_user_model()
    user = User.objects.create_user(f"ops-{time.time_ns()}")
    expires_at = timezone.now() + timedelta(days=1)
    _token, value = Token.objects.issue(user=user, name="ops-bench", expires_at=expires_at)
    crowd, _ = User.objects.get_or_create(username="ops-crowd")
    missing = TOKENS - Token.objects.filter(user=crowd).count()
    batch = []
    for n in range(missing):
        plaintext, parsed = credentials.generate()
        batch.append(
            Token(
                user=crowd,
                name=f"crowd-{n}",
                public_id=parsed.public_id,
                digest=parsed.digest,
                pepper_id=parsed.pepper_id,
                last_characters=plaintext[-4:],
                expires_at=expires_at,
            )
        )
        if len(batch) == 5000:
            Token.objects.bulk_create(batch)
            batch = []
    Token.objects.bulk_create(batch)
    return value, Token.objects.count()


def start(port, *, env, access_log):
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "portal.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--access-logfile",
        str(access_log),
        "--error-logfile",
        str(access_log.with_suffix(".errors")),
    ]
    server = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env}, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited with {server.returncode}") from None
            time.sleep(0.2)
    stop_server(server)
    raise SystemExit("gunicorn did not answer within 30 s")


def scrape_times(port, count):
    """Return the milliseconds each of *count* scrapes of /metrics took, end to end."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            response.read()
        times.append((time.perf_counter() - started) * 1000)
    return times


def in_process_costs(calls=20_000):
    """Return µs per request of counting a check (multiprocess files) and of writing one JSON access line."""
    started = time.perf_counter()
    for _ in range(calls):
        metrics.observe_check("api", time.perf_counter())
        metrics.count_check("api", "bearer", "accepted")
    counting = (time.perf_counter() - started) / calls * 1e6
    formatter = json_formatter()
    fields = {
        "request_id": "0" * 32,
        "method": "GET",
        "path": "/api/users/me",
        "status": 200,
        "duration_ms": 3.2,
        "user_id": 1,
        "token_id": 2,
        "client": "127.0.0.1",
    }
    message = "GET /api/users/me 200"
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(fields)
    started = time.perf_counter()
    for _ in range(calls):
        formatter.format(record)
    line = (time.perf_counter() - started) / calls * 1e6
    return counting, line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--port", type=int, required=True, help="the server with metrics and JSON logs")
    parser.add_argument("--port-off", type=int, required=True, help="the server without them")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 4)))
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    value, tokens = prepare()
    counting_us, line_us = in_process_costs()
    work = Path(tempfile.mkdtemp(prefix="portal-bench-ops-"))
    servers = {
        "off": start(
            args.port_off,
            env={"METRICS_ENABLED": "false", "LOG_FORMAT": "text"},
            access_log=work / "off.log",
        ),
        "on": start(
            args.port,
            env={"METRICS_ENABLED": "true", "LOG_FORMAT": "json", "METRICS_ALLOWED_IPS": "127.0.0.1"},
            access_log=work / "on.log",
        ),
    }
    ports = {"off": args.port_off, "on": args.port}
    rps = {"off": [], "on": []}
    try:
        case = Case("bearer", "bearer, usage recorded", "/api/users/me", "Authorization", f"Bearer {value}")
        for side in rps:
            wrk(ports[side], case, seconds=1, connections=args.connections)  # warm up
        for turn in range(args.rounds):
            for side in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                summary = wrk(ports[side], case, seconds=args.seconds, connections=args.connections)
                rps[side].append(summary["requests"] / (summary["duration_us"] / 1e6))
        scrape_times(args.port, 3)  # warm up
        scrapes = scrape_times(args.port, 50)
    finally:
        for server in servers.values():
            stop_server(server)
    json_lines = [json.loads(line) for line in (work / "on.log").read_text().splitlines() if line]
    assert json_lines and all("request_id" in line for line in json_lines)

    off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
    ordered = sorted(scrapes)
    lines = [
        f"## Operations on the hot path ({args.database})",
        "",
        f"{args.rounds} rounds × {args.seconds} s, wrk -c{args.connections}, two sync workers per server, "
        "both servers with an access log in a file.",
        "",
        "| recorded bearer path | req/s (median) | rounds |",
        "| --- | ---: | --- |",
        f"| metrics off, text logs | {off:,.0f} | {', '.join(f'{r:,.0f}' for r in rps['off'])} |",
        f"| metrics on, JSON logs | {on:,.0f} | {', '.join(f'{r:,.0f}' for r in rps['on'])} |",
        "",
        f"On ÷ off: {on / off:.3f} (cost {100 * (1 - on / off):+.1f} % of throughput; target at most 3 %).",
        "",
        f"In-process, per request: counting the check and its latency {counting_us:.1f} µs; formatting the "
        f"JSON access line {line_us:.1f} µs (a recorded bearer request takes about "
        f"{2e6 / max(on, off):,.0f} µs of a worker here).",
        "",
        f"/metrics with {tokens:,} tokens in the database: median {statistics.median(scrapes):.1f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.1f} ms, max {ordered[-1]:.1f} ms over {len(scrapes)} "
        "scrapes (target under 50 ms).",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
