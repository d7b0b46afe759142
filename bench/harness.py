"""The benchmarks' Django-free harness: the benchmarked paths, the gunicorn server, and wrk.

``bench.bench``, ``bench.gateway``, ``bench.operations`` and ``bench.scale`` share it. It imports
nothing of Django's, so each of those scripts chooses its own settings before Django loads.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


@dataclass
class Case:
    """One benchmarked request: where it goes, the credential it carries, and what it measured."""

    key: str
    label: str
    url: str
    header: str = ""  # HTTP header name
    value: str = ""
    status: int = 200
    wrk: list = field(default_factory=list)  # one summary per round
    micros: list = field(default_factory=list)  # in-process µs/request, one per round
    queries: int = 0
    round_trips: int = 0
    calls: int = 0  # requests sent outside the measured wrk rounds (in-process, probe, warm-up)
    runs: int = 0  # wrk runs, each of which may leave a request per connection in flight


def rotated(paths, turn):
    """Return *paths* starting at a different one each round, so no path always follows the same one."""
    turn %= len(paths)
    return paths[turn:] + paths[:turn]


# --- gunicorn + wrk ---------------------------------------------------------------------------------------


def start_server(port, workers):
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "bench.knoxsite.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--log-level",
        "critical",
        "--chdir",
        str(ROOT),
    ]
    server = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited with {server.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                return server
            # TimeoutError: the workers are still booting (a loaded machine, many workers).
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise SystemExit("gunicorn did not answer within 30 s")
    except BaseException:
        stop_server(server)  # never leave a server behind
        raise


def stop_server(server):
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def probe(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path.url}")
    if path.header:
        request.add_header(path.header, path.value)
    try:
        status = urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as error:
        status = error.code
    path.calls += 1
    if status != path.status:
        raise SystemExit(f"{path.label}: expected {path.status}, the server answered {status}")


def wrk(port, path, *, seconds, connections):
    env = {**os.environ, "BENCH_HEADER": path.header, "BENCH_VALUE": path.value}
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH_DIR / "report.lua"),
        f"http://127.0.0.1:{port}{path.url}",
    ]
    path.runs += 1
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    summary = json.loads(line[len("BENCH ") :])
    expected_errors = summary["requests"] if path.status >= 300 else 0
    if summary["non2xx"] != expected_errors:
        raise SystemExit(
            f"{path.label}: {summary['non2xx']} of {summary['requests']} answers were not {path.status}"
        )
    return summary


def load(paths, *, port, rounds, seconds, connections, workers):
    server = start_server(port, workers)
    try:
        for path in paths:
            probe(port, path)
            path.calls += wrk(port, path, seconds=1, connections=connections)["requests"]  # warm up
        for turn in range(rounds):
            for path in rotated(paths, turn):
                path.wrk.append(wrk(port, path, seconds=seconds, connections=connections))
    finally:
        stop_server(server)
