"""Migration 0010 converts a database with usage records without losing a record or changing a count.

Runs ``bench/convert.py`` on a database of its own (a SQLite file, or a new database on the test's
PostgreSQL server) with a few thousand records: CI stays quick. The same script converted a database
of a million records on both engines (docs/performance.md, "Converting an existing database"):
``USAGE_MIGRATION_RECORDS=1000000`` runs that size here.
"""

import json
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection

RECORDS = int(os.environ.get("USAGE_MIGRATION_RECORDS", "3000"))


@pytest.fixture
def empty_database(tmp_path):
    """Return the DATABASE_URL of a new, empty database on the engine under test."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'convert.sqlite3'}"
        return
    params = settings.DATABASES["default"]
    name = f"convert_{uuid.uuid4().hex[:12]}"
    server = {
        "host": params["HOST"],
        "port": params["PORT"],
        "user": params["USER"],
        "password": params["PASSWORD"],
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
        yield f"postgres://{params['USER']}{password}@{params['HOST']}:{params['PORT']}/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_converting_a_database_keeps_every_record_and_every_count(empty_database, tmp_path):
    env = {**os.environ, "DATABASE_URL": empty_database, "DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    finished = subprocess.run(
        [sys.executable, "-m", "bench.convert", str(RECORDS)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=1800,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["records"] == RECORDS
    assert result["problems"] == []
