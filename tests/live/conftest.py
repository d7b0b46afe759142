"""Live-server fixtures: real gunicorn processes and a throw-away PostgreSQL cluster.

The servers are started the way production starts them (``gunicorn portal.wsgi`` with several sync
workers) and talk to a real database, so what these tests see is what a client would see.

* ``main_server`` is gunicorn on the test database pytest-django created (SQLite file or PostgreSQL
  database: the main database of the run). Every test here runs with ``transactional_db`` (the
  autouse ``live_db``), so what it writes is committed and visible to the server processes.
* ``throwaway_postgres`` is a separate PostgreSQL cluster for the tests that need PostgreSQL
  whatever the main database is (several nodes, a database stopped mid-run). It runs in the SQLite
  run of CI too, so those tests never skip.

The classes and functions the tests import by name (``GunicornServer``, ``DatabaseShell``…) are in
tests/live/helpers.py.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.live.helpers import BASE_DIR, PG_PORTS, DatabaseShell, GunicornServer, database_url, free_port
from tokens.models import SitePolicy


@pytest.fixture(scope="session")
def live_log_dir():
    path = tempfile.mkdtemp(prefix="portal-live-logs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def main_server(django_db_setup, django_db_blocker, live_log_dir):
    """gunicorn with three workers on the main test database of this run (SQLite or PostgreSQL).

    Module-scoped: starting gunicorn costs a second or two. The database it reads is the one
    ``transactional_db`` empties between tests, so tests stay independent.
    """
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    server = GunicornServer(url, workers=3, log_dir=live_log_dir).start()
    yield server
    server.stop()
    # On PostgreSQL the test database is dropped at the end: no server may hold a connection then.


@pytest.fixture(autouse=True)
def live_db(transactional_db):
    """Commit what each test writes so the servers see it; put back the policy row the flush removes."""
    SitePolicy.load()
    return transactional_db


# Clusters started this session. The main database is flushed after each test; these are not.
_running_clusters = []


@pytest.fixture(autouse=True)
def no_failures_carried_over():
    """Start each test with no failed authentications counted on the throw-away cluster.

    Every client here is 127.0.0.1, so one test's refusals would count against the next test's
    clients on the shared cluster, and the API failure limit would answer them 429.
    """
    for cluster in _running_clusters:
        cluster.sql("DELETE FROM tokens_attemptcounter")


# --- the throw-away PostgreSQL cluster ----------------------------------------------------------------------


def _pg_bindir():
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return found[-1]


class PostgresCluster(DatabaseShell):
    """A PostgreSQL cluster of our own: migrated once, stopped and started again by the fault tests."""

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="portal-live-pg-"))
        self.port = free_port(PG_PORTS)

    def start_new(self):
        result = subprocess.run(
            [str(BASE_DIR / "bin" / "throwaway-postgres"), "start", str(self.dir), str(self.port)],
            capture_output=True,
            text=True,
            check=True,
        )
        self.url = result.stdout.strip().splitlines()[-1]
        self.manage("migrate", "--noinput", "-v0")
        return self

    def _pg_ctl(self, *args):
        command = [str(_pg_bindir() / "pg_ctl"), "-D", str(self.dir / "data"), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def stop(self, mode="immediate"):
        """Stop the server at once (``immediate`` is a crash as far as clients can tell)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self):
        self._pg_ctl(
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200",
            "start",
        )

    def destroy(self):
        subprocess.run([str(BASE_DIR / "bin" / "throwaway-postgres"), "stop", str(self.dir)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, statement, params=()):
        """Run one SQL statement in autocommit and return its rows (if any)."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else None


@pytest.fixture(scope="session")
def throwaway_postgres():
    cluster = PostgresCluster()
    try:
        _running_clusters.append(cluster.start_new())
        yield cluster
    finally:
        _running_clusters.clear()
        cluster.destroy()


@pytest.fixture(scope="module")
def postgres_nodes(throwaway_postgres, live_log_dir):
    """Two gunicorn servers ("nodes") sharing the throw-away PostgreSQL database."""
    nodes = [GunicornServer(throwaway_postgres.url, workers=2, log_dir=live_log_dir) for _ in range(2)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
