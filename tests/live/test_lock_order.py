"""Every write that can meet API traffic, made while clients hammer the same token and owner.

A request and an owner's write can each hold a row the other wants: a rename holds the owner's row and
then updates the token's, while a token's first use updates the token's row and its "first used" event
then takes ``FOR KEY SHARE`` on the owner's row for its foreign key. Locks taken in the wrong order or
mode make PostgreSQL find a deadlock, and one side answers 503. Here each write path runs for
real (over HTTP, or in a separate ``manage.py`` process through the same manager, admin or command
code) against a gunicorn server with several workers, on the main database of the run (SQLite or
PostgreSQL) and on the throw-away PostgreSQL cluster, so PostgreSQL is covered in every CI run.

Each test asserts what a user would notice: no 5xx for anyone, every write done, and exact counts
(the token's request count, its usage records and its daily summary agree with the answers the
clients received). The lock order these writes follow is in docs/security.md, "Lock order".
"""

import json
import secrets
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests import secret_scan

from .helpers import DatabaseShell, GunicornServer, database_url

pytestmark = pytest.mark.live

CLIENTS = 4
MIN_REQUESTS_EACH = 10  # every client is still busy when the writer starts and until it ends


@pytest.fixture(scope="module", params=["main_database", "throwaway_postgres"])
def target(request, django_db_setup, django_db_blocker, live_log_dir):
    """Return (server, database shell) for the module: gunicorn with three workers on one database."""
    if request.param == "main_database":
        with django_db_blocker.unblock():
            url = database_url(connection.settings_dict)
        yield request.getfixturevalue("main_server"), DatabaseShell(url)
        return
    cluster = request.getfixturevalue("throwaway_postgres")
    server = GunicornServer(cluster.url, workers=3, log_dir=live_log_dir).start()
    try:
        yield server, cluster
    finally:
        server.stop()


# Made in a separate process by the project's own managers, like production makes them. *spec*
# says what else the scenario needs: sibling tokens, legacy keys, old usage records, an expiry.
SETUP = """
import json, secrets
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from tokens.models import LegacyApiKey, Token
from tokens.usage.record import record
spec = json.loads({spec!r})
now = timezone.now()
User = get_user_model()
owner = User.objects.create_user("owner-" + secrets.token_hex(4), email="owner@example.org")
admin = User.objects.create_superuser("admin-" + secrets.token_hex(4), email="admin@example.org")
token, value = Token.objects.issue(user=owner, name="hammered", expires_at=now + timedelta(days=spec["days"]))
siblings = [Token.objects.issue(user=owner, name=f"sibling {{i}}", expires_at=now + timedelta(days=30))
            for i in range(spec["siblings"])]
keys = ["legacy-" + secrets.token_hex(16) for _ in range(spec["legacy_keys"])]
key_ids = [LegacyApiKey.objects.import_key(user=owner, key=key)[0].pk for key in keys]
for _ in range(spec["old_records"]):
    record(token_id=token.pk, user_id=owner.pk, at=now - timedelta(days=400),
           accepted=True, method="GET", path="/api/users/me", status=200, ip="192.0.2.1",
           user_agent="old", duration_ms=1.0)
print(json.dumps({{
    "owner": owner.pk, "username": owner.username, "admin": admin.pk, "token": token.pk, "value": value,
    "siblings": [t.pk for t, _v in siblings], "keys": keys, "key_ids": key_ids,
    "secrets": [value, *keys, *(v for _t, v in siblings)],
}}))
"""

# What the database says about one credential afterwards: its counter, its records, its summary.
COUNTS = """
import json
from django.db.models import Sum
from tokens.models import DailyUsage, LegacyApiKey, Token, UsageRecord
from tokens.usage.read import usage_totals
out = {{}}
for kind, model, pk in (("token", Token, {token}), ("legacy_key", LegacyApiKey, {key})):
    if pk is None:
        continue
    # As the pages read them: the summaries plus the records not summarised yet.
    row = usage_totals([model.objects.get(pk=pk)])[0]
    series = DailyUsage.objects.filter(**{{kind: pk}}).series(
        days=800, tail=UsageRecord.objects.unsummarised(**{{kind: pk}})
    )
    daily = {{"a": sum(a for _d, a, _r in series), "r": sum(r for _d, _a, r in series)}}
    out[kind] = {{
        "request_count": row.request_count,
        "records": UsageRecord.objects.filter(**{{kind: pk}}).count(),
        "accepted_records": UsageRecord.objects.filter(**{{kind: pk}}, accepted=True).count(),
        "daily_accepted": daily["a"] or 0,
        "daily_refused": daily["r"] or 0,
        "revoked": row.revoked_at is not None,
    }}
token = Token.objects.get(pk={token})
out["name"] = token.name
out["expires_at"] = token.expires_at.isoformat() if token.expires_at else None
out["notified"] = token.expiry_notified_at is not None
out["tokens"] = Token.objects.filter(user_id=token.user_id).count()
out["keys"] = LegacyApiKey.objects.filter(user_id=token.user_id).count()
out["old_records"] = UsageRecord.objects.filter(token_id={token}, user_agent="old").count()
print(json.dumps(out))
"""


def setup(database, *, days=30, siblings=0, legacy_keys=0, old_records=0):
    spec = json.dumps(
        {"days": days, "siblings": siblings, "legacy_keys": legacy_keys, "old_records": old_records}
    )
    return database.django(SETUP.format(spec=spec))


def counts(database, made, *, key=None):
    return database.django(COUNTS.format(token=made["token"], key=key))


def hammer_while(server, credentials, write):
    """Let CLIENTS clients call the API with *credentials* while *write()* runs (round robin).

    A credential is (headers, the usage page to read or None).

    Each client alternates between ``/api/users/me`` and the token's usage page, whose exact reads
    meet the same writes. Return (what write() returned, Counter of statuses per credential index).
    """
    stop = threading.Event()
    warmed_up = threading.Barrier(CLIENTS + 1)
    statuses = [Counter() for _ in credentials]
    failures = []
    lock = threading.Lock()

    def client_loop(n):
        client = server.client()
        which = n % len(credentials)
        headers, usage_path = credentials[which]
        paths = ["/api/users/me", usage_path or "/api/users/me"]
        try:
            for i in range(100_000):  # bounded even if the writer never returns
                # The last request of each client starts after the write has returned.
                last = stop.is_set() and i >= MIN_REQUESTS_EACH
                response = client.get(paths[i % 2], headers=headers)
                with lock:
                    statuses[which][response.status] += 1
                if i == 2:
                    warmed_up.wait(timeout=60)
                if last:
                    return
        except Exception as error:  # reported below
            failures.append((n, error))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        warmed_up.wait(timeout=60)
        result = write()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not failures, failures
    return result, statuses


def bearer(made):
    return {"Authorization": f"Bearer {made['value']}"}, f"/api/tokens/{made['token']}/usage"


def legacy(key):
    return {"Rest-Api-Key": key}, None


def assert_exact(numbers, *, answered, accepted, earlier=0, unrecorded_at_most=0):
    """The counter, the records and the daily summary agree with what the clients were answered.

    *unrecorded_at_most*: a legacy key from a client past the API failure limit is refused (429) before
    its lookup when the lock is already known, which is no use of the key; a 429 that met the limit after
    the lookup is recorded. So up to that many answers have no record.
    """
    assert numbers["request_count"] == accepted + earlier
    assert answered - unrecorded_at_most <= numbers["records"] <= answered
    assert numbers["accepted_records"] == accepted
    assert numbers["daily_accepted"] == accepted + earlier
    assert numbers["daily_refused"] == numbers["records"] - accepted


def assert_clean_log(server):
    log = server.log()
    assert "deadlock" not in log.lower()
    assert "Traceback" not in log


# --- the owner renames the token that is in use (the scenario) ------------------------------------


def test_renaming_a_token_40_times_while_four_clients_use_it_never_deadlocks_and_counts_exactly(target):
    server, database = target
    made = setup(database)
    headers = {"Authorization": f"Bearer {made['value']}"}
    renamer = server.client()

    def rename_40_times():
        return Counter(
            renamer.request(
                "PATCH", f"/api/tokens/{made['token']}", headers=headers, body={"name": f"renamed {i}"}
            ).status
            for i in range(40)
        )

    renames, (clients,) = hammer_while(server, [bearer(made)], rename_40_times)
    renamer.close()

    assert renames == {200: 40}
    assert clients == {200: clients.total()}
    numbers = counts(database, made)
    assert numbers["name"] == "renamed 39"
    assert_exact(numbers["token"], answered=clients.total() + 40, accepted=clients.total() + 40)
    assert_clean_log(server)


# --- the owner's other writes ---------------------------------------------------------------------------


def test_creating_tokens_for_the_owner_while_one_of_theirs_is_in_use_gives_no_5xx(target):
    server, database = target
    made = setup(database)
    create = f"""
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from tokens.models import Token
owner = get_user_model().objects.get(pk={made["owner"]})
expires_at = timezone.now() + timedelta(days=7)
made = [Token.objects.issue(user=owner, name=f"new {{i}}", expires_at=expires_at)[0].pk for i in range(25)]
print(json.dumps({{"created": len(made)}}))
"""
    result, (clients,) = hammer_while(server, [bearer(made)], lambda: database.manage("shell", "-c", create))

    assert json.loads(result.strip().splitlines()[-1]) == {"created": 25}
    assert clients == {200: clients.total()}
    numbers = counts(database, made)
    assert numbers["tokens"] == 26
    assert_exact(numbers["token"], answered=clients.total(), accepted=clients.total())
    assert_clean_log(server)


def test_revoking_the_owners_tokens_and_then_the_one_in_use_gives_no_5xx_and_exact_counts(target):
    server, database = target
    made = setup(database, siblings=10)
    headers = {"Authorization": f"Bearer {made['value']}"}
    revoker = server.client()

    def revoke_siblings_then_itself():
        answers = Counter(
            revoker.request("DELETE", f"/api/tokens/{pk}", headers=headers).status for pk in made["siblings"]
        )
        answers[revoker.request("DELETE", f"/api/tokens/{made['token']}", headers=headers).status] += 1
        return answers

    answers, (clients,) = hammer_while(server, [bearer(made)], revoke_siblings_then_itself)
    revoker.close()

    assert answers == {204: 11}
    assert set(clients) <= {200, 401, 429} and clients[401] >= CLIENTS
    numbers = counts(database, made)
    assert numbers["token"]["revoked"]
    assert_exact(numbers["token"], answered=clients.total() + 11, accepted=clients[200] + 11)
    assert_clean_log(server)


def test_shortening_the_token_in_use_again_and_again_gives_no_5xx(target):
    server, database = target
    made = setup(database, days=300)
    shorten = f"""
import json
from datetime import timedelta
from django.utils import timezone
from tokens.models import Token
token = Token.objects.get(pk={made["token"]})
now = timezone.now()
done = sum(token.shorten(now + timedelta(days=200 - i), actor=token.user) for i in range(30))
print(json.dumps({{"shortened": done}}))
"""
    result, (clients,) = hammer_while(server, [bearer(made)], lambda: database.manage("shell", "-c", shorten))

    assert json.loads(result.strip().splitlines()[-1]) == {"shortened": 30}
    assert clients == {200: clients.total()}
    assert_exact(counts(database, made)["token"], answered=clients.total(), accepted=clients.total())
    assert_clean_log(server)


def test_saving_the_policy_in_the_admin_while_tokens_and_legacy_keys_are_in_use_gives_no_5xx(target):
    server, database = target
    made = setup(database, legacy_keys=1)
    # What the admin's change view does: the validated form saved in one transaction, then the count
    # of tokens that live longer than the maximum (SitePolicyAdmin.save_model).
    save = """
import json
from django.db import transaction
from tokens.models import SitePolicy, Token
for i in range(30):
    with transaction.atomic():
        policy = SitePolicy.load()
        policy.usage_retention_days = 90 + i % 2
        policy.full_clean()
        policy.save()
        Token.objects.exceeding(policy.maximum_lifetime).count()
print(json.dumps({"retention": SitePolicy.load().usage_retention_days}))
"""
    result, (tokens, keys) = hammer_while(
        server, [bearer(made), legacy(made["keys"][0])], lambda: database.manage("shell", "-c", save)
    )

    result = json.loads(result.strip().splitlines()[-1])
    assert result == {"retention": 91}
    assert tokens == {200: tokens.total()}
    assert keys == {200: keys.total()}
    numbers = counts(database, made, key=made["key_ids"][0])
    assert_exact(numbers["token"], answered=tokens.total(), accepted=tokens.total())
    assert_exact(numbers["legacy_key"], answered=keys.total(), accepted=keys.total())
    assert_clean_log(server)


def test_deactivating_and_reactivating_the_owner_in_the_admin_gives_401s_never_5xx(target):
    server, database = target
    made = setup(database, legacy_keys=1)
    # Django's own user admin, the way an administrator deactivates someone: the change form.
    toggle = f"""
import json
from django.test import Client
from django.contrib.auth import get_user_model
User = get_user_model()
client = Client(HTTP_HOST="localhost")
client.force_login(User.objects.get(pk={made["admin"]}))
url = "/admin/auth/user/{made["owner"]}/change/"
answers = []
for i in range(20):
    owner = User.objects.get(pk={made["owner"]})
    data = {{"username": owner.username, "email": owner.email, "first_name": "", "last_name": "",
            "date_joined_0": owner.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": owner.date_joined.strftime("%H:%M:%S"),
            "initial-date_joined_0": owner.date_joined.strftime("%Y-%m-%d"),
            "initial-date_joined_1": owner.date_joined.strftime("%H:%M:%S")}}
    if i % 2:
        data["is_active"] = "on"
    answers.append(client.post(url, data).status_code)
print(json.dumps({{"answers": answers, "active": User.objects.get(pk={made["owner"]}).is_active}}))
"""
    result, (tokens, keys) = hammer_while(
        server, [bearer(made), legacy(made["keys"][0])], lambda: database.manage("shell", "-c", toggle)
    )

    assert json.loads(result.strip().splitlines()[-1]) == {"answers": [302] * 20, "active": True}
    assert set(tokens) <= {200, 401, 429} and set(keys) <= {200, 401, 429}
    numbers = counts(database, made, key=made["key_ids"][0])
    assert_exact(numbers["token"], answered=tokens.total(), accepted=tokens[200])
    assert_exact(
        numbers["legacy_key"], answered=keys.total(), accepted=keys[200], unrecorded_at_most=keys[429]
    )
    assert_clean_log(server)


def test_revoking_the_owners_legacy_keys_while_one_is_in_use_gives_no_5xx_and_exact_counts(target):
    server, database = target
    made = setup(database, legacy_keys=8)
    in_use = made["key_ids"][-1]
    revoke = f"""
import json
from tokens.models import LegacyApiKey
done = sum(LegacyApiKey.objects.get(pk=pk).revoke(actor=None) for pk in {made["key_ids"]})
print(json.dumps({{"revoked": done}}))
"""
    result, (tokens, keys) = hammer_while(
        server, [bearer(made), legacy(made["keys"][-1])], lambda: database.manage("shell", "-c", revoke)
    )

    assert json.loads(result.strip().splitlines()[-1]) == {"revoked": 8}
    assert tokens == {200: tokens.total()}
    assert set(keys) <= {200, 401, 429} and keys[401] >= CLIENTS // 2
    numbers = counts(database, made, key=in_use)
    assert numbers["legacy_key"]["revoked"]
    assert_exact(numbers["token"], answered=tokens.total(), accepted=tokens.total())
    assert_exact(
        numbers["legacy_key"], answered=keys.total(), accepted=keys[200], unrecorded_at_most=keys[429]
    )
    assert_clean_log(server)


# --- the cron commands and the import -------------------------------------------------------------------


def test_pruning_old_records_of_the_token_in_use_keeps_every_new_record_and_every_total(target):
    server, database = target
    made = setup(database, old_records=120)
    result, (clients,) = hammer_while(
        server, [bearer(made)], lambda: database.manage("prune_usage", "--batch-size", "10")
    )

    assert "Deleted 120 usage record(s)" in result
    assert clients == {200: clients.total()}
    numbers = counts(database, made)
    assert numbers["old_records"] == 0
    # The records are the new ones only; the counter and the daily summary still hold the pruned ones.
    assert_exact(numbers["token"], answered=clients.total(), accepted=clients.total(), earlier=120)
    assert_clean_log(server)


def test_mailing_the_owner_about_the_token_in_use_expiring_gives_no_5xx(target):
    server, database = target
    made = setup(database, days=2)

    def notify_three_times():
        return [database.manage("notify_expiring_tokens") for _ in range(3)]

    outputs, (clients,) = hammer_while(server, [bearer(made)], notify_three_times)

    # Other owners' tokens may be due too on a shared database: each run mails whoever is due, once.
    assert all("Mailed " in out and "owner(s) about" in out for out in outputs)
    assert clients == {200: clients.total()}
    numbers = counts(database, made)
    assert numbers["notified"]
    assert_exact(numbers["token"], answered=clients.total(), accepted=clients.total())
    assert_clean_log(server)


def test_importing_legacy_keys_for_the_owner_while_their_token_and_key_are_in_use_gives_no_5xx(target):
    server, database = target
    made = setup(database, legacy_keys=1)
    keys = [f"imported-{secrets.token_hex(16)}" for _ in range(30)]
    for key in keys:
        secret_scan.track(key, reveal="test setup")
    csv_file = Path(tempfile.mkdtemp(prefix="portal-import-")) / "keys.csv"
    csv_file.write_text("username,key\n" + "".join(f"{made['username']},{key}\n" for key in keys))

    result, (tokens, used) = hammer_while(
        server,
        [bearer(made), legacy(made["keys"][0])],
        lambda: database.manage("import_legacy_keys", str(csv_file)),
    )

    assert "Imported 30 key(s)" in result
    assert tokens == {200: tokens.total()}
    assert used == {200: used.total()}
    numbers = counts(database, made, key=made["key_ids"][0])
    assert numbers["keys"] == 31
    assert_exact(numbers["token"], answered=tokens.total(), accepted=tokens.total())
    assert_exact(numbers["legacy_key"], answered=used.total(), accepted=used.total())
    assert_clean_log(server)


# --- nothing waits forever --------------------------------------------------------------------------------


def test_rotating_the_token_in_use_again_and_again_then_revoking_the_newest_gives_no_5xx(target):
    server, database = target
    made = setup(database)
    # Each rotation locks the old token and its predecessor (whose overlap it ends) in id order, the
    # revoke the predecessor and then its own row: the order in which the summariser takes them.
    chain = f"""
import json
from datetime import timedelta
from tokens.models import Token
token = Token.objects.get(pk={made["token"]})
for i in range(15):
    token, _new = token.rotate(overlap=timedelta(hours=1), actor=token.user)
token.revoke(actor=token.user)
print(json.dumps({{"live": Token.objects.filter(user_id=token.user_id).live().count()}}))
"""
    result, (clients,) = hammer_while(server, [bearer(made)], lambda: database.manage("shell", "-c", chain))

    assert json.loads(result.strip().splitlines()[-1]) == {"live": 0}
    # The value in use works until the second rotation ends its overlap, and never after.
    assert clients[200] >= CLIENTS and set(clients) <= {200, 401, 429}
    assert_clean_log(server)


@pytest.mark.parametrize("target", ["throwaway_postgres"], indirect=True)
def test_a_request_that_waits_too_long_for_a_row_lock_gets_a_503_and_the_next_one_is_served(target):
    server, database = target
    made = setup(database)
    client = server.client()
    headers = {"Authorization": f"Bearer {made['value']}"}
    # A stuck transaction elsewhere (a hung script, an administrator's open psql) holds the token's row.
    with psycopg.connect(database.url, connect_timeout=5) as stuck:
        stuck.execute("SELECT 1 FROM tokens_token WHERE id = %s FOR UPDATE", [made["token"]])
        started = time.monotonic()
        response = client.get("/api/users/me", headers=headers)
        waited = time.monotonic() - started
        stuck.rollback()
    after = client.get("/api/users/me", headers=headers)
    client.close()

    # The usage INSERT gave up after DATABASE_LOCK_TIMEOUT (5 s): fail closed, never a 500, never served.
    assert response.status == 503, response
    assert response.json()["error"] == "service_unavailable"
    assert response.headers["retry-after"] == "5"
    assert 4 < waited < 15
    assert after.status == 200
    # The refused request left no record; the served one is counted once.
    assert_exact(counts(database, made)["token"], answered=1, accepted=1)
