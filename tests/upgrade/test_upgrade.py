"""Upgrades lose nothing: a database made by the previous release works, unchanged, after ``migrate``.

The previous release is the newest released entry of CHANGELOG.md (its ``Commit:`` line), checked out in a
temporary git worktree. Its own ``manage.py`` and its own API, served by a real gunicorn, make the data:
tokens with limits, a rotation in its overlap, a revoked token, legacy keys, usage (part of it summarised)
and events. The old server stops; the current code migrates the same database and serves it; every token
and key must still authenticate with its limits, the tokens' counts and the events must read as the old
release answered them, and the pages must render.

The database is the run's own kind: a SQLite file, or a new database on the PostgreSQL server of
DATABASE_URL (CI runs the suite on both). The old release runs on the current virtualenv when its
requirements are among the current ones; otherwise it gets a virtualenv of its own.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings

from tests import secret_scan
from tests.live.helpers import BASE_DIR, DatabaseShell, GunicornServer

pytestmark = pytest.mark.live

RELEASED = re.compile(
    r"^## (\d+\.\d+\.\d+) \((?!Unreleased)[^)]*\).*?^Commit: ([0-9a-f]{7,40})$", re.M | re.S
)
PASSWORD = "an old release's password 31"
LEGACY_KEYS = {"alice": "0ld-release-alice-legacy-key", "bob": "0ld-release-bob-legacy-key"}


def previous_release():
    """Return (version, commit) of the newest released entry of CHANGELOG.md."""
    text = (BASE_DIR / "CHANGELOG.md").read_text(encoding="utf-8")
    match = RELEASED.search(text)
    assert match, "CHANGELOG.md names no released version with a 'Commit: <hash>' line"
    return match.group(1), match.group(2)


def git(*args):
    return subprocess.run(["git", "-C", str(BASE_DIR), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Check the previous release out in a temporary worktree; yield (version, its folder, its python)."""
    version, commit = previous_release()
    if git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
        pytest.fail(
            f"The previous release {version} (commit {commit}, from CHANGELOG.md) is not in this clone: "
            "the upgrade test needs the full history (git fetch --unshallow)."
        )
    folder = tmp_path_factory.mktemp("release") / f"v{version}"
    added = git("worktree", "add", "--detach", str(folder), commit)
    assert added.returncode == 0, added.stderr
    try:
        yield version, folder, _python_for(folder, tmp_path_factory)
    finally:
        git("worktree", "remove", "--force", str(folder))
        git("worktree", "prune")


def _requirements(pyproject):
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return set(project["dependencies"]) | set(project.get("optional-dependencies", {}).get("postgres", []))


def _python_for(folder, tmp_path_factory):
    """Return the interpreter to run the release in *folder* with: ours when it needs nothing else."""
    if _requirements(folder / "pyproject.toml") <= _requirements(BASE_DIR / "pyproject.toml"):
        return sys.executable
    environment = tmp_path_factory.mktemp("release-venv")
    venv.create(environment, with_pip=True)
    python = str(environment / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{folder}[postgres]", "gunicorn"],
        check=True,
        capture_output=True,
    )
    return python


@pytest.fixture
def database_url(tmp_path):
    """A new, empty database of the run's kind; dropped afterwards on PostgreSQL."""
    main = os.environ.get("DATABASE_URL", "")
    if not main.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'upgraded.sqlite3'}"
        return
    name = f"portal_upgrade_{secrets.token_hex(4)}"
    with psycopg.connect(main, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(main)._replace(path=f"/{name}"))
    with psycopg.connect(main, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Release(DatabaseShell):
    """``manage.py`` of the release in *folder*, run with *python*, against the database at *url*."""

    def __init__(self, url, folder, python):
        super().__init__(url, cwd=folder)
        self.python = python

    def manage(self, *args, stdin=None):
        result = subprocess.run(
            [self.python, "manage.py", *args],
            cwd=self.cwd,
            env=_env(self.url),
            input=stdin,
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def issue(self, *args):
        """Run create_token or rotate_token; return the value it prints once."""
        value = self.manage(*args).strip().splitlines()[-1]
        secret_scan.track(value, reveal="upgrade test setup")
        return value


def _env(url):
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DATA_DIR=str(settings.DATA_DIR),
        SECRET_KEY=settings.SECRET_KEY,
        TOKEN_PEPPERS=",".join(f"{pid}={value}" for pid, value in settings.TOKEN_PEPPERS.items()),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    return env


def bearer(value):
    return {"Authorization": f"Bearer {value}"}


def key(value):
    return {"Rest-Api-Key": value}


def snapshot(client, *, alice, bob, admin):
    """What the API answers about every token and event, read with the three users' tokens."""
    return {
        "alice": client.get("/api/tokens?page_size=100", headers=bearer(alice)).json()["results"],
        "bob": client.get("/api/tokens?page_size=100", headers=bearer(bob)).json()["results"],
        "events": client.get("/api/events?limit=500", headers=bearer(admin)).json()["results"],
    }


def assert_kept(old, new, *, read_with):
    """Every field the old release answered reads the same now; *read_with* were used once more to read."""
    for owner in ("alice", "bob"):
        now = {token["id"]: token for token in new[owner]}
        assert set(now) == {token["id"] for token in old[owner]}
        for token in old[owner]:
            expected = dict(token)
            if token["id"] in read_with:  # the old release's own read of the snapshot was one more use
                expected["request_count"] += 1
                for field in ("last_used_at", "last_used_ip", "last_used_user_agent"):
                    expected.pop(field)
            assert {name: now[token["id"]][name] for name in expected} == expected, token["name"]
    now = {event["id"]: event for event in new["events"]}
    for event in old["events"]:
        assert {name: now[event["id"]][name] for name in event} == event


def _sign_in(client, username):
    page = client.get("/accounts/login/")
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed_in = client.request(
        "POST",
        "/accounts/login/",
        headers={"Cookie": f"csrftoken={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
        body=f"csrfmiddlewaretoken={form_token}&username={username}&password={PASSWORD}",
    )
    assert signed_in.status == 302, signed_in
    session = re.search(r"sessionid=([^;]+)", signed_in.headers["set-cookie"]).group(1)
    return {"Cookie": f"csrftoken={cookie}; sessionid={session}"}


def test_a_database_made_by_the_previous_release_works_unchanged_after_the_upgrade(
    release, database_url, tmp_path
):
    _version, folder, python = release
    old = Release(database_url, folder, python)
    # The release's own code, not ours, runs there.
    where = old.manage("shell", "-c", "import json, tokens; print(json.dumps(tokens.__file__))")
    assert Path(json.loads(where.strip().splitlines()[-1])).is_relative_to(folder)

    # --- the previous release makes the data -----------------------------------------------------------
    old.manage("migrate", "--noinput", "-v0")
    old.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"[User.objects.create_user(n, password={PASSWORD!r}) for n in ('alice', 'bob')]; "
        f"User.objects.create_superuser('root', password={PASSWORD!r})",
    )
    ci = old.issue("create_token", "alice", "ci", "--days", "30")
    reader = old.issue(
        "create_token", "alice", "reader", "--days", "30", "--read-only", "--allow-ip", "127.0.0.1"
    )
    elsewhere = old.issue("create_token", "alice", "elsewhere", "--days", "30", "--allow-ip", "192.0.2.0/24")
    gone = old.issue("create_token", "alice", "gone", "--days", "30")
    deploy = old.issue("create_token", "bob", "deploy", "--days", "90")
    audit = old.issue("create_token", "root", "audit", "--days", "30")
    old.manage("revoke_token", "--value", "-", stdin=gone + "\n")
    ci_id = old.django(
        "import json; from tokens.models import Token; "
        "print(json.dumps({'id': Token.objects.get(name='ci').pk}))"
    )["id"]
    ci_next = old.issue("rotate_token", str(ci_id), "--overlap", "7d")
    csv = "username,key\n" + "".join(f"{user},{value}\n" for user, value in LEGACY_KEYS.items())
    for value in LEGACY_KEYS.values():
        secret_scan.track(value, kind="key", reveal="upgrade test setup")
    old.manage("import_legacy_keys", "-", stdin=csv)

    server = GunicornServer(
        database_url,
        workers=2,
        log_dir=tmp_path,
        cwd=folder,
        gunicorn=str(Path(python).parent / "gunicorn"),
    ).start()
    try:
        client = server.client()
        uses = [
            (ci, "GET", 200),
            (ci, "GET", 200),
            (ci_next, "GET", 200),
            (reader, "GET", 200),
            (reader, "POST", 403),
            (elsewhere, "GET", 403),
            (gone, "GET", 401),
            (deploy, "GET", 200),
            (audit, "GET", 200),
        ]
        for value, method, status in uses:
            assert client.request(method, "/api/users/me", headers=bearer(value)).status == status
        old.manage("summarise_usage")  # part of the usage in the summaries, part in the tail
        for value in (*LEGACY_KEYS.values(), LEGACY_KEYS["alice"]):
            assert client.get("/api/users/me", headers=key(value)).status == 200
        assert client.get("/api/users/me", headers=bearer(ci)).status == 200
        before = snapshot(client, alice=ci_next, bob=deploy, admin=audit)
    finally:
        server.stop()
    keys_before = old.django(KEY_USES)
    assert before["events"], "the old release recorded events"
    ids = {name: _id(before, name) for name in ("reader", "elsewhere", "gone", "deploy")}
    ids["ci"], ids["ci_next"] = ci_id, next(t["id"] for t in before["alice"] if t["replaces"] == ci_id)
    counts = {token["id"]: token["request_count"] for token in before["alice"] + before["bob"]}
    # A token's count is of its accepted requests.
    assert counts[ids["ci"]] == 3 and counts[ids["reader"]] == 1 and counts[ids["gone"]] == 0

    # --- the current code migrates the same database and serves it -------------------------------------
    current = DatabaseShell(database_url)
    current.manage("migrate", "--noinput", "-v0")
    assert current.django(KEY_USES) == keys_before == {"uses": {"alice": 2, "bob": 1}}
    server = GunicornServer(database_url, workers=2, log_dir=tmp_path).start()
    try:
        client = server.client()
        after = snapshot(client, alice=ci_next, bob=deploy, admin=audit)
        assert_kept(before, after, read_with={ids["ci_next"], ids["deploy"]})

        # Every credential still authenticates, with its limits.
        rotating = client.get("/api/users/me", headers=bearer(ci))
        assert rotating.status == 200 and "sunset" in rotating.headers  # its overlap goes on
        assert client.get("/api/users/me", headers=bearer(ci_next)).status == 200
        assert client.get("/api/users/me", headers=bearer(reader)).status == 200
        assert client.request("POST", "/api/users/me", headers=bearer(reader)).status == 403
        assert client.get("/api/users/me", headers=bearer(elsewhere)).status == 403
        assert client.get("/api/users/me", headers=bearer(gone)).status == 401
        assert client.get("/api/users/me", headers=bearer(deploy)).status == 200
        for value in LEGACY_KEYS.values():
            legacy = client.get("/api/users/me", headers=key(value))
            assert legacy.status == 200 and "link" in legacy.headers

        # The counts go on from where they were.
        later = snapshot(client, alice=ci_next, bob=deploy, admin=audit)
        now = {token["id"]: token["request_count"] for token in later["alice"] + later["bob"]}
        assert now[ids["ci"]] == counts[ids["ci"]] + 1
        assert now[ids["reader"]] == counts[ids["reader"]] + 1
        assert now[ids["elsewhere"]] == counts[ids["elsewhere"]] == 0
        assert now[ids["gone"]] == counts[ids["gone"]] == 0
        assert current.django(KEY_USES) == {"uses": {"alice": 3, "bob": 2}}

        # The pages render the old data.
        alice = _sign_in(client, "alice")
        assert client.get("/profile/", headers=alice).status == 200
        assert client.get("/profile/integrations/authorizations/", headers=alice).status == 200
        for name in ("ci", "reader", "elsewhere", "gone"):
            detail = client.get(f"/profile/integrations/authorizations/{ids[name]}/", headers=alice)
            assert detail.status == 200 and name in detail.text
        root = _sign_in(client, "root")
        for page in ("/admin/tokens/token/", "/admin/tokens/legacyapikey/", "/admin/tokens/usagerecord/"):
            assert client.get(page, headers=root).status == 200, page
    finally:
        server.stop()


# Uses of each legacy key, by owner: read the same way by the old release and the current code.
KEY_USES = (
    "import json; from django.db.models import Count; from tokens.models import UsageRecord; "
    "rows = UsageRecord.objects.filter(legacy_key__isnull=False).values_list('legacy_key__user__username')"
    ".annotate(n=Count('id')); print(json.dumps({'uses': dict(rows)}))"
)


def _id(snap, name):
    return next(token["id"] for token in snap["alice"] + snap["bob"] if token["name"] == name)
