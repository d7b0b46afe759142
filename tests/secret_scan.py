"""A pytest plugin that fails the run when a token value or legacy key shows up where it must not.

The product's promise is that a token value exists in exactly one response: the one that creates it.
During the whole test session this plugin

* observes every secret at its source: each value ``tokens.credentials.generate`` returns and each key
  ``LegacyApiKey.objects.import_key`` stores (thin wrappers that call the real functions and note the
  result: observation, not a mock);
* reads everything the code under test shows to the outside: every response Django produces in this
  process (a middleware put in front of all others; the test client, the browser tests' live server),
  every response the live tests receive from gunicorn, every log record, the gunicorn logs, and what
  management commands write; and what the server keeps between requests: after each test that used
  the database, every session and every entry of the cache table;
* allows a value to appear only in its single reveal: the response to the very request that generated
  it, when that request is one of the reveal endpoints (``POST /api/tokens``, the create form's POST,
  the admin's add form, and the three rotations: API, token page, admin), or the stdout of the
  ``create_token`` or ``rotate_token`` command that generated it.

Anything else is a leak. A leak fails the test during which it happened (as an error in its teardown)
and the session. Reports show only the first and last characters of a value, so the report does not
leak it in turn.

Enable it with ``pytest_plugins = ["tests.secret_scan"]`` in tests/conftest.py. Loaded with ``-p``
instead, it is imported before pytest-django sets Django up, so it imports no model: it takes the
two it needs from the app registry when it runs.
"""

import base64
import logging
import pickle
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, OutputWrapper
from django.db import DatabaseError, connection

from tokens import credentials

# (method, path) of the responses that may carry a value generated while handling them.
REVEALS = (
    ("POST", re.compile(r"^/api/tokens/?$")),
    ("POST", re.compile(r"^/profile/integrations/authorizations/new/$")),
    ("POST", re.compile(r"^/admin/tokens/token/add/$")),
    # Rotation: the new value's one reveal, exactly like a creation's.
    ("POST", re.compile(r"^/api/tokens/(?:[0-9]+|self)/rotate$")),
    ("POST", re.compile(r"^/profile/integrations/authorizations/[0-9]+/rotate/$")),
    ("POST", re.compile(r"^/admin/tokens/token/[0-9]+/rotate/$")),
    # Keyless CI: the minted value's one reveal, to the job that proved who it is.
    ("POST", re.compile(r"^/api/token-exchange$")),
    # A service account's tokens, made and rotated by a manager: the same reveals under their own paths.
    ("POST", re.compile(r"^/api/service-accounts/[0-9]+/tokens(?:/[0-9]+/rotate)?$")),
    ("POST", re.compile(r"^/profile/integrations/authorizations/service-accounts/[0-9]+/new/$")),
)
REVEALING_COMMANDS = frozenset({"create_token", "rotate_token"})
# Shorter legacy keys could match ordinary text by chance; the tests use longer ones.
MIN_KEY_LENGTH = 12


def mask(value):
    return f"{value[:6]}…{value[-2:]}" if len(value) > 10 else "…"


@dataclass
class Leak:
    value: str
    where: str
    test: str | None

    def __str__(self):
        during = self.test or "no test: a fixture's teardown"
        return f"{mask(self.value)} appeared in {self.where} (during {during})"


@dataclass
class Scanner:
    """Remember secrets and report any text that contains one outside its reveal."""

    tokens: set = field(default_factory=set)
    keys: set = field(default_factory=set)
    leaks: list = field(default_factory=list)
    observed: int = 0
    current_test: str | None = None

    def track(self, value, *, kind="token"):
        if not isinstance(value, str):
            return
        if kind == "token":
            self.tokens.add(value)
        elif len(value) >= MIN_KEY_LENGTH:
            self.keys.add(value)

    def find(self, text):
        """Return the known secrets that occur in *text*."""
        found = {match for match in credentials.TOKEN_RE.findall(text) if match in self.tokens}
        found.update(key for key in self.keys if key in text)
        return found

    def observe(self, text, *, where, allowed=frozenset()):
        """Scan *text*; every secret in it that is not in *allowed* is a leak. Return the leaks."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.observed += 1
        leaks = [Leak(value, where, self.current_test) for value in self.find(text) - set(allowed)]
        self.leaks.extend(leaks)
        return leaks


scanner = Scanner()
_local = threading.local()


def track(value, *, kind="token", reveal=None):
    """Add a secret made outside this process (a live server, a subprocess) to the scan."""
    scanner.track(value, kind=kind)


def _pending():
    return getattr(_local, "pending", None)


def _note_generated(value, kind):
    scanner.track(value, kind=kind)
    pending = _pending()
    if pending is not None:
        pending.add(value)


def _response_text(response, *, body):
    headers = "\n".join(f"{name}: {value}" for name, value in response.items())
    cookies = response.cookies.output() if hasattr(response, "cookies") else ""
    return f"{headers}\n{cookies}\n{body}"


def observe_response(*, method, path, status, headers, body, source):
    """Scan a response received from a server in another process: nothing in it may be a known secret."""
    text = "\n".join(f"{name}: {value}" for name, value in dict(headers).items())
    body = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return scanner.observe(f"{text}\n{body}", where=f"{source} {method} {path} -> {status}")


def observe_log_file(path):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return scanner.observe(text, where=f"log file {path}")


class ScanMiddleware:
    """Outermost middleware (added by this plugin only): scan each response Django produces."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        outer = _pending()
        _local.pending = generated = set()
        try:
            response = self.get_response(request)
        finally:
            _local.pending = outer
        if response.streaming:
            return response  # static files and downloads; no view of ours streams secrets
        body = response.content.decode(response.charset or "utf-8", "replace")
        reveal = any(request.method == m and pattern.match(request.path) for m, pattern in REVEALS)
        scanner.observe(
            _response_text(response, body=body),
            where=f"response to {request.method} {request.path} ({response.status_code})",
            allowed=generated if reveal else frozenset(),
        )
        return response


class ScanLogHandler(logging.Handler):
    def emit(self, record):
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        scanner.observe(text, where=f"log record of {record.name}")


def _install_spies():
    """Wrap the places where secrets are born; each wrapper calls the real function unchanged."""
    real_generate = credentials.generate
    key_manager = type(apps.get_model("tokens", "LegacyApiKey").objects)  # LegacyApiKeyManager
    real_import_key = key_manager.import_key
    real_execute = BaseCommand.execute
    real_write = OutputWrapper.write

    def generate():
        value, parsed = real_generate()
        _note_generated(value, "token")
        return value, parsed

    def import_key(self, *, user, key):
        _note_generated(key, "key")
        return real_import_key(self, user=user, key=key)

    def execute(self, *args, **options):
        outer = getattr(_local, "command", None)
        _local.command = (self, set())
        try:
            return real_execute(self, *args, **options)
        finally:
            _local.command = outer

    def write(self, msg="", style_func=None, ending=None):
        command = getattr(_local, "command", None)
        allowed = frozenset()
        name = "a management command"
        if command is not None:
            instance, generated = command
            command_name = type(instance).__module__.rsplit(".", 1)[-1]
            name = f"the {command_name} command"
            if self is getattr(instance, "stdout", None) and command_name in REVEALING_COMMANDS:
                allowed = frozenset(generated)
        scanner.observe(str(msg), where=f"output of {name}", allowed=allowed)
        return real_write(self, msg, style_func, ending)

    def generate_in_command():
        value, parsed = generate()
        command = getattr(_local, "command", None)
        if command is not None:
            command[1].add(value)
        return value, parsed

    credentials.generate = generate_in_command
    key_manager.import_key = import_key
    BaseCommand.execute = execute
    OutputWrapper.write = write


def pytest_configure(config):
    _install_spies()
    settings.MIDDLEWARE = ["tests.secret_scan.ScanMiddleware", *settings.MIDDLEWARE]
    handler = ScanLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("django.server").addHandler(handler)


@pytest.fixture(autouse=True)
def _no_secret_leaks(request):
    """Fail the test (in its teardown) if a secret leaked while it ran."""
    scanner.current_test = request.node.nodeid
    before = len(scanner.leaks)
    yield
    leaks = scanner.leaks[before:]
    scanner.current_test = None
    if leaks:
        pytest.fail(
            "secret scan: a token value or legacy key appeared outside its single reveal:\n"
            + "\n".join(f"  {leak}" for leak in leaks),
            pytrace=False,
        )


DB_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
}


def _uses_database(item):
    return bool(DB_FIXTURES & set(getattr(item, "fixturenames", ()))) or item.get_closest_marker("django_db")


def _stored_state():
    """Yield (where, text) for what the server keeps between requests: sessions and the cache table."""
    for session in apps.get_model("sessions", "Session").objects.all():
        yield "the session store", repr(session.get_decoded())
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT cache_key, value FROM portal_cache")
            rows = cursor.fetchall()
    except DatabaseError:
        return
    for key, value in rows:
        try:
            # The database cache's own encoding; these rows were written by the code under test.
            decoded = pickle.loads(base64.b64decode(value.encode()))
        except Exception:
            decoded = value
        yield "the cache", f"{key} {decoded!r}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """After a test that used the database, and before it is rolled back, scan sessions and cache."""
    yield
    if not _uses_database(item):
        return

    try:
        for where, text in _stored_state():
            scanner.observe(text, where=where)
    except DatabaseError:
        pass  # a test that stopped or broke its database has nothing left to scan


def pytest_sessionfinish(session, exitstatus):
    if scanner.leaks and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    reporter = terminalreporter
    if scanner.leaks:
        reporter.section("secret scan", red=True)
        for leak in scanner.leaks:
            reporter.line(f"LEAK {leak}", red=True)
    else:
        reporter.line(
            f"secret scan: {len(scanner.tokens)} token values and {len(scanner.keys)} legacy keys, "
            f"{scanner.observed} responses, logs and outputs scanned, no leak"
        )
