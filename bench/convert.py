"""Convert a database from the usage trigger (migration 0003) to the append-only store (0010) and check it.

    DATABASE_URL=… python -m bench.convert 1000000      # on an empty database; prints one JSON line

On an empty database: migrates to 0003, loads N usage records for a few tokens and legacy keys over
the last 40 days (generated on the database server, their per-day and per-address summaries and
counters made in one pass, as the trigger would have left them), takes a snapshot of every count,
runs the later migrations, 0010 among them (timed), and compares what the pages read afterwards
(summaries + tail, through the portal's own readers) with the snapshot; then records one more request
per credential and checks that it counts once, with an id above every old one.
``tests/test_usage_migration.py`` runs it with a small N on both databases; docs/performance.md has the
run with a million.
"""

import json
import os
import sys
import time

import django

# Chosen before Django loads: the imports below need it set up.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from tokens.models import ClientAddress, DailyUsage, LegacyApiKey, Token, UsageRecord  # noqa: E402
from tokens.usage.read import client_addresses, usage_totals  # noqa: E402
from tokens.usage.record import record as record_usage  # noqa: E402
from tokens.usage.summarise import summarise  # noqa: E402

TOKENS = 4
KEYS = 2
COLUMNS = "token_id, legacy_key_id, user_id, at, accepted, method, path, status, ip, user_agent, duration_ms"

POSTGRESQL_LOAD = f"""
INSERT INTO tokens_usagerecord ({COLUMNS})
SELECT CASE WHEN i %% %(n)s < %(t)s THEN (%(tokens)s::bigint[])[1 + i %% %(n)s] END,
       CASE WHEN i %% %(n)s >= %(t)s THEN (%(keys)s::bigint[])[1 + i %% %(n)s - %(t)s] END,
       %(user)s, now() - (i * %(step)s) * interval '1 second', i %% 7 <> 0, 'GET', '/api/users/me',
       CASE WHEN i %% 7 <> 0 THEN 200 ELSE 401 END, ('198.51.100.' || (i %% 23))::inet,
       'agent/' || (i %% 5), 2.0
FROM generate_series(0, %(last)s) AS i
"""
SQLITE_LOAD = f"""
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :last)
INSERT INTO tokens_usagerecord ({COLUMNS})
SELECT CASE WHEN i % :n < :t THEN json_extract(:tokens, '$[' || (i % :n) || ']') END,
       CASE WHEN i % :n >= :t THEN json_extract(:keys, '$[' || (i % :n - :t) || ']') END,
       :user, strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (i * :step) || ' seconds'), i % 7 <> 0, 'GET',
       '/api/users/me', CASE WHEN i % 7 <> 0 THEN 200 ELSE 401 END, '198.51.100.' || (i % 23),
       'agent/' || (i % 5), 2.0
FROM seq
"""
DAY = {"postgresql": "(at AT TIME ZONE 'UTC')::date", "sqlite": "date(at)"}
ACCEPTED = {"postgresql": "accepted::int", "sqlite": "accepted"}


def _summaries(cursor, vendor):
    """What the trigger would have kept, made in one pass per credential kind."""
    for column, table in (("token_id", "tokens_token"), ("legacy_key_id", "tokens_legacyapikey")):
        cursor.execute(
            f"INSERT INTO tokens_dailyusage (token_id, legacy_key_id, day, accepted, refused) "
            f"SELECT {'token_id' if column == 'token_id' else 'NULL'}, "
            f"{'legacy_key_id' if column == 'legacy_key_id' else 'NULL'}, {DAY[vendor]}, "
            f"sum({ACCEPTED[vendor]}), sum(1 - {ACCEPTED[vendor]}) FROM tokens_usagerecord "
            f"WHERE {column} IS NOT NULL GROUP BY {column}, {DAY[vendor]}"
        )
        token = "token_id" if column == "token_id" else "CAST(NULL AS bigint)"
        key = "legacy_key_id" if column == "legacy_key_id" else "CAST(NULL AS bigint)"
        cursor.execute(
            "INSERT INTO tokens_clientaddress (token_id, legacy_key_id, ip, first_seen, last_seen, "
            "last_user_agent, "
            "requests) SELECT g.t, g.k, g.ip, g.first, g.last, "
            "(SELECT r.user_agent FROM tokens_usagerecord r WHERE r.id = g.newest), g.n FROM ("
            f"SELECT {token} AS t, {key} AS k, ip, min(at) AS first, max(at) AS last, max(id) AS newest, "
            f"count(*) AS n FROM tokens_usagerecord WHERE {column} IS NOT NULL GROUP BY {column}, ip) g"
        )
        cursor.execute(
            f"UPDATE {table} SET request_count = (SELECT count(*) FROM tokens_usagerecord u "
            f"WHERE u.{column} = {table}.id AND u.accepted), "
            f"last_used_at = (SELECT max(at) FROM tokens_usagerecord u "
            f"WHERE u.{column} = {table}.id AND u.accepted)"
        )
        cursor.execute(
            f"UPDATE {table} SET last_used_ip = (SELECT ip FROM tokens_usagerecord u "
            f"WHERE u.{column} = {table}.id "
            f"AND u.accepted AND u.at = {table}.last_used_at ORDER BY id DESC LIMIT 1), "
            f"last_used_user_agent = COALESCE((SELECT user_agent FROM tokens_usagerecord u WHERE "
            f"u.{column} = {table}.id AND u.accepted AND u.at = {table}.last_used_at "
            "ORDER BY id DESC LIMIT 1), '')"
        )


def _snapshot(credentials):
    """Every number a page shows for each credential, read the way the pages read it."""
    shown = {}
    for credential in credentials:
        kind = "token" if credential.event_field == "token" else "legacy_key"
        credential = type(credential).objects.get(pk=credential.pk)
        usage_totals([credential])
        records = UsageRecord.objects.filter(**{kind: credential})
        tail = UsageRecord.objects.unsummarised(**{kind: credential})
        count, addresses = client_addresses(
            ClientAddress.objects.filter(**{kind: credential}), tail, limit=100
        )
        shown[f"{kind} {credential.pk}"] = {
            "request_count": credential.request_count,
            "last_used_at": credential.last_used_at.isoformat(),
            "last_used_ip": credential.last_used_ip,
            "last_used_user_agent": credential.last_used_user_agent,
            "daily": [
                (d.isoformat(), a, r)
                for d, a, r in DailyUsage.objects.filter(**{kind: credential}).series(days=45, tail=tail)
            ],
            "addresses": [count, sorted((a.ip, a.requests, a.last_seen.isoformat()) for a in addresses)],
            "records": records.count(),
        }
    return shown


def _old_snapshot(connection):
    """The same numbers at migration 0003, from the trigger's tables (the new models do not fit yet)."""
    shown = {}
    with connection.cursor() as cursor:
        for kind, column, table in (
            ("token", "token_id", "tokens_token"),
            ("legacy_key", "legacy_key_id", "tokens_legacyapikey"),
        ):
            cursor.execute(
                f"SELECT id, request_count, last_used_at, last_used_ip, last_used_user_agent FROM {table}"
            )
            for pk, count, at, ip, agent in cursor.fetchall():
                shown[f"{kind} {pk}"] = {"request_count": count, "last_used_at": at, "ip": ip, "agent": agent}
                cursor.execute(f"SELECT count(*) FROM tokens_usagerecord WHERE {column} = %s", [pk])
                shown[f"{kind} {pk}"]["records"] = cursor.fetchone()[0]
                cursor.execute(
                    f"SELECT count(*), sum(requests) FROM tokens_clientaddress WHERE {column} = %s", [pk]
                )
                shown[f"{kind} {pk}"]["addresses"] = list(cursor.fetchone())
        cursor.execute("SELECT sum(accepted), sum(refused) FROM tokens_dailyusage")
        shown["daily"] = list(cursor.fetchone())
        cursor.execute("SELECT count(*), max(id) FROM tokens_usagerecord")
        shown["all records"] = list(cursor.fetchone())
    return shown


def convert(n):
    call_command("migrate", "auth", verbosity=0)
    call_command("migrate", "tokens", "0003", verbosity=0)
    vendor = connection.vendor
    with connection.cursor() as cursor:
        user_table = get_user_model()._meta.db_table
        cursor.execute(
            f"INSERT INTO {user_table} (password, is_superuser, username, first_name, last_name, email, "
            "is_staff, "
            "is_active, date_joined) VALUES ('!', %s, 'convert', '', '', '', %s, %s, %s)",
            [False, False, True, timezone.now()],
        )
        cursor.execute(f"SELECT id FROM {user_table} WHERE username = 'convert'")
        (user,) = cursor.fetchone()
        tokens, keys = [], []
        for i in range(TOKENS):
            cursor.execute(
                "INSERT INTO tokens_token (pepper_id, request_count, last_used_user_agent, user_id, name, "
                "purpose, public_id, digest, last_characters, created_at) "
                "VALUES (1, 0, '', %s, %s, '', %s, %s, 'abcd', %s)",
                [user, f"t{i}", f"convert{i:05d}", f"{i:064x}", timezone.now()],
            )
            cursor.execute("SELECT id FROM tokens_token WHERE public_id = %s", [f"convert{i:05d}"])
            tokens.append(cursor.fetchone()[0])
        for i in range(KEYS):
            cursor.execute(
                "INSERT INTO tokens_legacyapikey (pepper_id, request_count, last_used_user_agent, user_id, "
                "digest, "
                "imported_at) VALUES (1, 0, '', %s, %s, %s)",
                [user, f"{i + 100:064x}", timezone.now()],
            )
            cursor.execute("SELECT id FROM tokens_legacyapikey WHERE digest = %s", [f"{i + 100:064x}"])
            keys.append(cursor.fetchone()[0])
    # The trigger would update a counter row per record: off for the load, then the summaries in one pass.
    started = time.perf_counter()
    step = 40 * 86400 / max(n, 1)
    with transaction.atomic(), connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute("SET LOCAL statement_timeout = 0")
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute(
                POSTGRESQL_LOAD,
                {
                    "n": TOKENS + KEYS,
                    "t": TOKENS,
                    "tokens": tokens,
                    "keys": keys,
                    "user": user,
                    "step": step,
                    "last": n - 1,
                },
            )
            cursor.execute("SET LOCAL session_replication_role = origin")
        else:
            cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'tokens_usage_summaries'")
            (trigger,) = cursor.fetchone()
            cursor.execute("DROP TRIGGER tokens_usage_summaries")
            connection.connection.execute(
                SQLITE_LOAD,
                {
                    "n": TOKENS + KEYS,
                    "t": TOKENS,
                    "tokens": json.dumps(tokens),
                    "keys": json.dumps(keys),
                    "user": user,
                    "step": step,
                    "last": n - 1,
                },
            )
            cursor.execute(trigger)
        _summaries(cursor, vendor)
    load_s = time.perf_counter() - started
    old = _old_snapshot(connection)

    started = time.perf_counter()
    call_command("migrate", "tokens", verbosity=0)
    migrate_s = time.perf_counter() - started

    credentials = [*Token.objects.filter(pk__in=tokens), *LegacyApiKey.objects.filter(pk__in=keys)]
    new = _snapshot(credentials)
    problems = []
    for name, numbers in new.items():
        before = old[name]
        kept = (
            numbers["request_count"] == before["request_count"]
            and numbers["records"] == before["records"]
            and numbers["last_used_ip"] == before["ip"]
            and numbers["last_used_user_agent"] == before["agent"]
            and numbers["addresses"][0] == before["addresses"][0]
            and sum(r for _ip, r, _seen in numbers["addresses"][1]) == before["addresses"][1]
        )
        if not kept:
            problems.append(f"{name}: {before} became {numbers}")
    daily = [sum(n["daily"][i][1] for n in new.values()) for i in range(45)]
    refused = [sum(n["daily"][i][2] for n in new.values()) for i in range(45)]
    if [sum(daily), sum(refused)] != old["daily"]:
        problems.append(f"daily totals {old['daily']} became {[sum(daily), sum(refused)]}")
    if [
        UsageRecord.objects.count(),
        UsageRecord.objects.order_by("-pk").values_list("pk", flat=True).first(),
    ] != (old["all records"]):
        problems.append("records or ids changed")
    # One more request per credential after the conversion: counted once, with a newer id.
    for credential in credentials:
        kind = "token_id" if credential.event_field == "token" else "legacy_key_id"
        record_usage(
            **{kind: credential.pk},
            user_id=user,
            at=timezone.now(),
            accepted=True,
            method="GET",
            path="/api/users/me",
            status=200,
            ip="203.0.113.1",
            user_agent="after",
            duration_ms=1.0,
        )
    after = _snapshot(credentials)
    for name, numbers in after.items():
        if (
            numbers["request_count"] != new[name]["request_count"] + 1
            or numbers["last_used_ip"] != "203.0.113.1"
        ):
            problems.append(f"{name}: the request after the conversion was not counted once")
    if UsageRecord.objects.order_by("-pk").values_list("pk", flat=True).first() <= old["all records"][1]:
        problems.append("a new record reused an old id")
    summarised = summarise()
    if _snapshot(credentials) != after or summarised != len(credentials):
        problems.append("summarising changed what the pages show")
    return {
        "database": vendor,
        "records": n,
        "load_s": round(load_s, 1),
        "migrate_s": round(migrate_s, 1),
        "problems": problems,
    }


if __name__ == "__main__":
    print(json.dumps(convert(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
