"""The usage trigger, the policy row and the cache table.

One INSERT into tokens_usagerecord is all an API request writes. This trigger adds it, in the same
statement and transaction, to the credential's request count and last use, to the per-day summary
and to the list of client addresses. Database-side increments: exact under any concurrency, and the
summaries outlive pruning of the raw records.

On SQLite, a later migration that rebuilds tokens_token, tokens_legacyapikey, tokens_dailyusage or
tokens_clientaddress (adding a constraint, changing a column) must drop this trigger first and create
it again afterwards: SQLite refuses to rename a table a trigger refers to.
"""

from django.core.management import call_command
from django.db import migrations

SQLITE = [
    """
CREATE TRIGGER tokens_usage_summaries AFTER INSERT ON tokens_usagerecord
BEGIN
    UPDATE tokens_token SET
        request_count = request_count + NEW.accepted,
        last_used_at = CASE WHEN NEW.accepted THEN NEW.at ELSE last_used_at END,
        last_used_ip = CASE WHEN NEW.accepted THEN NEW.ip ELSE last_used_ip END,
        last_used_user_agent = CASE WHEN NEW.accepted THEN NEW.user_agent ELSE last_used_user_agent END
    WHERE NEW.token_id IS NOT NULL AND id = NEW.token_id;
    UPDATE tokens_legacyapikey SET
        request_count = request_count + NEW.accepted,
        last_used_at = CASE WHEN NEW.accepted THEN NEW.at ELSE last_used_at END,
        last_used_ip = CASE WHEN NEW.accepted THEN NEW.ip ELSE last_used_ip END,
        last_used_user_agent = CASE WHEN NEW.accepted THEN NEW.user_agent ELSE last_used_user_agent END
    WHERE NEW.legacy_key_id IS NOT NULL AND id = NEW.legacy_key_id;
    INSERT INTO tokens_dailyusage (token_id, legacy_key_id, day, accepted, refused)
        SELECT NEW.token_id, NULL, date(NEW.at), NEW.accepted, 1 - NEW.accepted WHERE NEW.token_id IS NOT NULL
        ON CONFLICT (token_id, day) WHERE token_id IS NOT NULL
        DO UPDATE SET accepted = accepted + excluded.accepted, refused = refused + excluded.refused;
    INSERT INTO tokens_dailyusage (token_id, legacy_key_id, day, accepted, refused)
        SELECT NULL, NEW.legacy_key_id, date(NEW.at), NEW.accepted, 1 - NEW.accepted
        WHERE NEW.legacy_key_id IS NOT NULL
        ON CONFLICT (legacy_key_id, day) WHERE legacy_key_id IS NOT NULL
        DO UPDATE SET accepted = accepted + excluded.accepted, refused = refused + excluded.refused;
    INSERT INTO tokens_clientaddress (token_id, legacy_key_id, ip, first_seen, last_seen, last_user_agent, requests)
        SELECT NEW.token_id, NULL, NEW.ip, NEW.at, NEW.at, NEW.user_agent, 1
        WHERE NEW.token_id IS NOT NULL AND NEW.ip IS NOT NULL
        ON CONFLICT (token_id, ip) WHERE token_id IS NOT NULL
        DO UPDATE SET last_seen = excluded.last_seen, last_user_agent = excluded.last_user_agent,
                      requests = requests + 1;
    INSERT INTO tokens_clientaddress (token_id, legacy_key_id, ip, first_seen, last_seen, last_user_agent, requests)
        SELECT NULL, NEW.legacy_key_id, NEW.ip, NEW.at, NEW.at, NEW.user_agent, 1
        WHERE NEW.legacy_key_id IS NOT NULL AND NEW.ip IS NOT NULL
        ON CONFLICT (legacy_key_id, ip) WHERE legacy_key_id IS NOT NULL
        DO UPDATE SET last_seen = excluded.last_seen, last_user_agent = excluded.last_user_agent,
                      requests = requests + 1;
END
""",
]
SQLITE_REVERSE = ["DROP TRIGGER IF EXISTS tokens_usage_summaries"]

POSTGRESQL = [
    """
CREATE OR REPLACE FUNCTION tokens_usage_summaries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok integer := NEW.accepted::integer;
    usage_day date := (NEW.at AT TIME ZONE 'UTC')::date;
BEGIN
    IF NEW.token_id IS NOT NULL THEN
        UPDATE tokens_token SET
            request_count = request_count + ok,
            last_used_at = CASE WHEN NEW.accepted THEN NEW.at ELSE last_used_at END,
            last_used_ip = CASE WHEN NEW.accepted THEN NEW.ip ELSE last_used_ip END,
            last_used_user_agent = CASE WHEN NEW.accepted THEN NEW.user_agent ELSE last_used_user_agent END
        WHERE id = NEW.token_id;
        INSERT INTO tokens_dailyusage (token_id, legacy_key_id, day, accepted, refused)
            VALUES (NEW.token_id, NULL, usage_day, ok, 1 - ok)
            ON CONFLICT (token_id, day) WHERE token_id IS NOT NULL
            DO UPDATE SET accepted = tokens_dailyusage.accepted + EXCLUDED.accepted,
                          refused = tokens_dailyusage.refused + EXCLUDED.refused;
        IF NEW.ip IS NOT NULL THEN
            INSERT INTO tokens_clientaddress (token_id, legacy_key_id, ip, first_seen, last_seen, last_user_agent, requests)
                VALUES (NEW.token_id, NULL, NEW.ip, NEW.at, NEW.at, NEW.user_agent, 1)
                ON CONFLICT (token_id, ip) WHERE token_id IS NOT NULL
                DO UPDATE SET last_seen = EXCLUDED.last_seen, last_user_agent = EXCLUDED.last_user_agent,
                              requests = tokens_clientaddress.requests + 1;
        END IF;
    ELSE
        UPDATE tokens_legacyapikey SET
            request_count = request_count + ok,
            last_used_at = CASE WHEN NEW.accepted THEN NEW.at ELSE last_used_at END,
            last_used_ip = CASE WHEN NEW.accepted THEN NEW.ip ELSE last_used_ip END,
            last_used_user_agent = CASE WHEN NEW.accepted THEN NEW.user_agent ELSE last_used_user_agent END
        WHERE id = NEW.legacy_key_id;
        INSERT INTO tokens_dailyusage (token_id, legacy_key_id, day, accepted, refused)
            VALUES (NULL, NEW.legacy_key_id, usage_day, ok, 1 - ok)
            ON CONFLICT (legacy_key_id, day) WHERE legacy_key_id IS NOT NULL
            DO UPDATE SET accepted = tokens_dailyusage.accepted + EXCLUDED.accepted,
                          refused = tokens_dailyusage.refused + EXCLUDED.refused;
        IF NEW.ip IS NOT NULL THEN
            INSERT INTO tokens_clientaddress (token_id, legacy_key_id, ip, first_seen, last_seen, last_user_agent, requests)
                VALUES (NULL, NEW.legacy_key_id, NEW.ip, NEW.at, NEW.at, NEW.user_agent, 1)
                ON CONFLICT (legacy_key_id, ip) WHERE legacy_key_id IS NOT NULL
                DO UPDATE SET last_seen = EXCLUDED.last_seen, last_user_agent = EXCLUDED.last_user_agent,
                              requests = tokens_clientaddress.requests + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER tokens_usage_summaries AFTER INSERT ON tokens_usagerecord
FOR EACH ROW EXECUTE FUNCTION tokens_usage_summaries()
""",
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS tokens_usage_summaries ON tokens_usagerecord",
    "DROP FUNCTION IF EXISTS tokens_usage_summaries()",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise NotImplementedError(f"No usage trigger for {schema_editor.connection.vendor}.")
        for statement in statements:
            schema_editor.execute(statement)

    return run


def create_policy(apps, schema_editor):
    apps.get_model("tokens", "ExpirationPolicy").objects.get_or_create(pk=1)


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("tokens", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}),
        ),
        migrations.RunPython(create_policy, migrations.RunPython.noop),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
