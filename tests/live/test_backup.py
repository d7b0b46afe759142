"""``manage.py backup``: a consistent copy of a SQLite database taken while gunicorn writes to it.

The database is a SQLite file of this test's own, whatever the run's main database is, so the test runs
in the PostgreSQL run of CI too; on PostgreSQL the command only points to pg_dump.
"""

import sqlite3
import stat
import subprocess
import threading
import time

import pytest

from .helpers import BASE_DIR, PYTHON, DatabaseShell, GunicornServer, server_env

pytestmark = pytest.mark.live


def test_backup_copies_a_sqlite_database_consistently_while_the_portal_writes(tmp_path, live_log_dir):
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    shell = DatabaseShell(url)
    shell.manage("migrate", "--noinput", "-v0")
    made = shell.django(
        "import json; from datetime import timedelta; from django.utils import timezone; "
        "from django.contrib.auth.models import User; from tokens.models import Token; "
        "u = User.objects.create_user('alice'); "
        "t, v = Token.objects.issue(user=u, name='ci', expires_at=timezone.now() + timedelta(days=9)); "
        "print(json.dumps({'token': t.pk, 'secrets': [v]}))"
    )
    value = made["secrets"][0]
    server = GunicornServer(url, workers=2, log_dir=live_log_dir).start()
    stop = threading.Event()
    served = []

    def write():
        # Each accepted call writes a usage record (and the first one the token's row and an event).
        client = server.client()
        while not stop.is_set():
            served.append(client.get("/api/users/me", headers={"Authorization": f"Bearer {value}"}).status)

    writers = [threading.Thread(target=write) for _ in range(3)]
    try:
        for writer in writers:
            writer.start()
        while len(served) < 30:
            time.sleep(0.05)
        copies = [tmp_path / f"copy-{n}.sqlite3" for n in range(3)]
        for copy in copies:
            out = shell.manage("backup", str(copy))
            assert "integrity check: ok" in out
    finally:
        stop.set()
        for writer in writers:
            writer.join()
        server.stop()
    assert set(served) == {200}

    counts = []
    for copy in copies:
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            records = db.execute("SELECT COUNT(*) FROM tokens_usagerecord").fetchone()[0]
            # A snapshot of one moment: the token's first use (its row) is there with its records.
            first_used = db.execute("SELECT last_used_at FROM tokens_token").fetchone()[0]
            assert records > 0 and first_used is not None
            counts.append(records)
        db.close()
    # Taken one after another while the writers went on: each copy holds more than the one before.
    assert counts == sorted(counts) and counts[0] < counts[-1]
    # The copy is a working database: the portal's own checks run on it.
    DatabaseShell(f"sqlite:///{copies[-1]}").manage("migrate", "--check")


def test_backup_refuses_an_existing_file_and_points_postgresql_to_pg_dump(tmp_path):
    existing = tmp_path / "there.sqlite3"
    existing.write_text("keep me")
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    DatabaseShell(url).manage("migrate", "--noinput", "-v0")
    refused = subprocess.run(
        [PYTHON, "manage.py", "backup", str(existing)],
        cwd=BASE_DIR,
        env=server_env(url),
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "exists already" in refused.stderr
    assert existing.read_text() == "keep me"

    # The engine alone decides: no PostgreSQL server needs to answer.
    postgres = subprocess.run(
        [PYTHON, "manage.py", "backup", str(tmp_path / "pg.copy")],
        cwd=BASE_DIR,
        env=server_env("postgres://portal@127.0.0.1:9/portal"),
        capture_output=True,
        text=True,
    )
    assert postgres.returncode != 0
    assert "pg_dump" in postgres.stderr
    assert not (tmp_path / "pg.copy").exists()
