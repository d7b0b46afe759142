"""Plain helpers the live tests import: a gunicorn server, an HTTP client, `manage.py` in another process.

Fixtures that start and stop these live in conftest.py; what a test imports by name lives here, so no test
module imports a conftest.
"""

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from tests import secret_scan

BASE_DIR = Path(settings.BASE_DIR)
GUNICORN = str(BASE_DIR / ".venv" / "bin" / "gunicorn")
PYTHON = sys.executable
PG_PORTS = range(57000, 58000)


def free_port(ports=None):
    """Return a loopback TCP port nothing listens on (from *ports*, or any the kernel offers)."""
    # Shuffled, so two test runs on one machine rarely reach for the same port at the same moment.
    candidates = random.sample(list(ports), len(ports)) if ports else [0]
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


def server_env(database_url):
    """Return the environment a server process needs to verify the tokens this process issues."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(settings.DATA_DIR),
        SECRET_KEY=settings.SECRET_KEY,
        TOKEN_PEPPERS=",".join(f"{pid}={value}" for pid, value in settings.TOKEN_PEPPERS.items()),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="INFO",
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    return env


def database_url(settings_dict):
    """Return a DATABASE_URL for the connection settings *settings_dict* (the test database)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    if host.startswith("/"):  # a Unix socket folder
        host = quote(host, safe="")
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{credentials}{host}:{port}/{settings_dict['NAME']}"


class Client:
    """A tiny HTTP client over one http.client connection (reopened when the server closes it).

    Every response it receives is shown to the secret scan, like the responses Django makes in-process.
    """

    def __init__(self, port, *, timeout=30):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method, path, *, headers=None, body=None):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A sync worker closes the connection after each response; reconnect once.
                self.connection.close()
                if attempt == 2:
                    raise
        if response.getheader("Connection", "").lower() == "close":
            self.connection.close()
        result = Response(response.status, response.getheaders(), data)
        secret_scan.observe_response(
            method=method,
            path=path,
            status=result.status,
            headers=result.headers,
            body=data,
            source=f"gunicorn:{self.port}",
        )
        return result

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def close(self):
        self.connection.close()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {}
        for name, value in headers:
            # Repeated headers (Set-Cookie…) are kept, joined as HTTP allows.
            name = name.lower()
            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class GunicornServer:
    """One gunicorn process tree serving portal.wsgi on a free loopback port."""

    def __init__(self, database_url, *, workers=3, log_dir, env=None, cwd=BASE_DIR, gunicorn=GUNICORN):
        self.database_url = database_url
        self.workers = workers
        self.env = env or {}  # settings of this server on top of server_env()
        self.cwd = cwd  # the project folder whose code it serves (another release's, for upgrades)
        self.gunicorn = gunicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / f"gunicorn-{self.port}.log"
        self.process = None

    def start(self):
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                self.gunicorn,
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--worker-class",
                "sync",
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "--access-logfile",
                "-",
                "--error-logfile",
                "-",
            ],
            cwd=self.cwd,
            env={**server_env(self.database_url), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.wait_until_healthy()
        return self

    def wait_until_healthy(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client(timeout=5).get("/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not become healthy:\n{self.log()}")

    def client(self, *, timeout=30):
        return Client(self.port, timeout=timeout)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Everything the servers logged must be free of token values and keys too.
        secret_scan.observe_log_file(self.log_path)


class DatabaseShell:
    """``manage.py`` and ``manage.py shell`` in a separate process against the database at *url*."""

    def __init__(self, url=None, *, cwd=BASE_DIR):
        self.url = url
        self.cwd = cwd  # the project folder whose manage.py runs (another release's, for upgrades)

    def manage(self, *args, stdin=None):
        """Run manage.py against this database and return its stdout."""
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=self.cwd,
            input=stdin,
            env=server_env(self.url),
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def django(self, code):
        """Run Python *code* inside Django against this database; it prints one JSON line, returned parsed.

        The code uses the project's own managers (Token.objects.issue, LegacyApiKey.objects.import_key),
        so the data is made exactly as production makes it.
        """
        out = json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])
        # Values issued in another process are still secrets the scan must look for.
        for value in out.get("secrets", []):
            secret_scan.track(value, reveal="test setup")
        return out
