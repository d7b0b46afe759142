"""Benchmark forward authentication: nginx + auth_request to the portal, against nginx alone and the portal.

Run by ``bash bench/run`` (``make bench``) after bench.bench, on the same database:

    bench/.venv/bin/python -m bench.gateway --database sqlite --port 56xxx

Three paths, loaded by wrk in turns (rounds, like bench.bench):

* nginx → upstream: the price of the proxy alone;
* nginx + ``auth_request`` → the portal's /forward-auth (gunicorn) → upstream: a guarded request, recorded;
* the portal's own bearer path, ``GET /api/users/me`` on the same gunicorn: the cost to compare against.

The upstream is a second nginx server answering a fixed 200, so the numbers are the gateway's, not an
application's. nginx is Debian's, started with a generated configuration under a temporary folder.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import django

# Chosen before Django loads: the imports below need it set up. The portal believes nginx (on
# loopback) about the original request and the client's address.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["TRUSTED_PROXIES"] = "127.0.0.1/32"
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.harness import Case, rotated, start_server, stop_server, wrk  # noqa: E402
from tokens.models import Token  # noqa: E402

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream portal {{ server 127.0.0.1:{portal}; keepalive 16; }}
    upstream api {{ server 127.0.0.1:{upstream}; keepalive 16; }}

    server {{
        listen 127.0.0.1:{upstream};
        location / {{ default_type application/json; return 200 '{{"ok": true}}'; }}
    }}

    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /_forward_auth {{
            internal;
            proxy_pass http://portal/forward-auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location /guarded/ {{
            auth_request /_forward_auth;
            auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
            proxy_set_header X-Auth-User-Id $auth_user_id;
            proxy_set_header Authorization "";
            proxy_pass http://api;
        }}
        location /open/ {{ proxy_pass http://api; }}
    }}
}}
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nginx(*, portal_port):
    """Start Debian's nginx on free ports; return (process, folder, port)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    folder = Path(tempfile.mkdtemp(prefix="portal-bench-nginx-"))
    folder.chmod(0o755)
    port, upstream = _free_port(), _free_port()
    conf = NGINX_CONF.format(dir=folder, portal=portal_port, upstream=upstream, port=port)
    (folder / "nginx.conf").write_text(conf)
    command = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"nginx exited with {process.returncode}: {(folder / 'error.log').read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/open/", timeout=1).read()
            return process, folder, port
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise SystemExit("nginx did not answer within 20 s")


def stop_nginx(process, folder):
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def prepare():
    """Migrate, then issue one bearer token for the gateway paths."""
    call_command("migrate", verbosity=0)
    user, _created = get_user_model().objects.get_or_create(username="gateway-bench")
    _token, value = Token.objects.issue(
        user=user, name=f"gateway {time.time_ns()}", expires_at=timezone.now() + timedelta(days=1)
    )
    auth = f"Bearer {value}"
    return [
        Case("open", "nginx → upstream (no authentication)", "/open/x"),
        Case("guarded", "nginx + auth_request → portal → upstream", "/guarded/x", "Authorization", auth),
        Case(
            "bearer", "portal's own bearer path (GET /api/users/me)", "/api/users/me", "Authorization", auth
        ),
    ]


def report(cases, *, database, rounds, seconds, connections, workers):
    lines = [
        f"## Forward authentication — {database}",
        "",
        f"{rounds} rounds × {seconds} s per path, wrk -t1 -c{connections}; nginx 1 worker, "
        f"gunicorn sync × {workers} workers; every guarded and bearer request recorded.",
        "",
        "| path | req/s (median) | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for case in cases:
        rate = statistics.median(s["requests"] / (s["duration_us"] / 1e6) for s in case.wrk)
        p50 = statistics.median(s["p50_us"] for s in case.wrk) / 1000
        p99 = statistics.median(s["p99_us"] for s in case.wrk) / 1000
        lines.append(f"| {case.label} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="label for the table (sqlite, postgresql)")
    parser.add_argument("--port", type=int, required=True, help="the portal's gunicorn port")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 4)))
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cases = prepare()
    server = start_server(args.port, args.workers)
    nginx = None
    try:
        nginx, folder, nginx_port = start_nginx(portal_port=args.port)
        ports = {"open": nginx_port, "guarded": nginx_port, "bearer": args.port}
        for case in cases:
            case.calls += wrk(ports[case.key], case, seconds=1, connections=args.connections)["requests"]
        for turn in range(args.rounds):
            for case in rotated(cases, turn):
                summary = wrk(ports[case.key], case, seconds=args.seconds, connections=args.connections)
                case.wrk.append(summary)
    finally:
        if nginx is not None:
            stop_nginx(nginx, folder)
        stop_server(server)
    text = report(
        cases,
        database=args.database,
        rounds=args.rounds,
        seconds=args.seconds,
        connections=args.connections,
        workers=args.workers,
    )
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
