"""Usage records become append-only: no trigger, no foreign keys; summaries behind a watermark; partitions.

1. The trigger of migration 0002 goes (on SQLite migrations 0005, 0007 and 0009 re-create it around
   their table rebuilds, so this runs last and drops it on both databases whatever is there): an API
   request now writes its record and nothing else.
2. ``UsageSummaryState`` holds the watermark: every record at or below it is in the summaries. All
   existing records were summarised by the trigger, so it starts at the highest existing id and no
   count changes (the table is locked first on PostgreSQL, so no request writes in between).
3. The record's foreign keys lose their database constraint (``db_constraint=False``). On SQLite
   Django rebuilds the table for that (a copy of every row, ids and AUTOINCREMENT kept: the watermark
   needs ids that are never reused).
4. PostgreSQL: the table is rebuilt as a table partitioned by day on ``at`` (one partition per day
   from the oldest record within retention to a week ahead, and a default partition for everything
   else), every row copied with its id, and the id sequence carried on. Its primary key becomes
   ``(id, at)``, as PostgreSQL requires the partition key in it; ids stay unique (one sequence).

It holds the usage table for the time of the copy (about 10 s per million records on PostgreSQL,
measured in docs/performance.md): API requests wait for it. Run it in a quiet moment; the statement
timeout is lifted for this migration only. Going back (a development database, the migration tests)
needs every record summarised first (``manage.py summarise_usage``): the old trigger keeps the
summaries in the same transaction, so records it never saw would be missing from the counts for ever.
"""

import importlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from tokens.usage import partitions as usage_partitions

usage_trigger = importlib.import_module("tokens.migrations.0002_usage_trigger_and_policy")

SEQUENCE = "tokens_usagerecord_id_seq"


def partitioned_table(model, schema_editor):
    """Return (sql, params) creating the usage table partitioned by day, from the model's state here.

    Every column, check and constraint the migrations have given the table up to this point (the
    cutover's ``would_refuse`` among them), so the copy loses none; only the id changes: a plain bigint
    fed by a sequence (a partitioned table has no identity column here), and the primary key becomes
    ``(id, at)``.
    """
    quote = schema_editor.quote_name
    definitions, params = [], []
    for field in model._meta.local_concrete_fields:
        if field.primary_key:
            definitions.append(f"{quote(field.column)} bigint NOT NULL DEFAULT nextval('{SEQUENCE}')")
            continue
        definition, field_params = schema_editor.column_sql(model, field, include_default=True)
        check = field.db_parameters(connection=schema_editor.connection)["check"]
        if check:
            definition += " " + schema_editor.sql_check_constraint % {"check": check}
        definitions.append(f"{quote(field.column)} {definition}")
        params.extend(field_params)
    for constraint in model._meta.constraints:
        definitions.append(constraint.constraint_sql(model, schema_editor))
    definitions.append(f"CONSTRAINT tokens_usagerecord_pkey PRIMARY KEY ({quote(model._meta.pk.column)}, at)")
    body = ",\n    ".join(definitions)
    return f"CREATE TABLE tokens_usagerecord (\n    {body}\n) PARTITION BY RANGE (at)", params


def drop_trigger(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("SET LOCAL statement_timeout = 0")
            # No request records anything until this migration commits: the watermark below is exact.
            cursor.execute("LOCK TABLE tokens_usagerecord IN ACCESS EXCLUSIVE MODE")
            cursor.execute("DROP TRIGGER IF EXISTS tokens_usage_summaries ON tokens_usagerecord")
            cursor.execute("DROP FUNCTION IF EXISTS tokens_usage_summaries()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS tokens_usage_summaries")


def restore_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for statement in {"sqlite": usage_trigger.SQLITE, "postgresql": usage_trigger.POSTGRESQL}[vendor]:
        schema_editor.execute(statement)


def start_watermark(apps, schema_editor):
    highest = apps.get_model("tokens", "UsageRecord").objects.aggregate(m=models.Max("pk"))["m"] or 0
    apps.get_model("tokens", "UsageSummaryState").objects.create(
        pk=1, summarised_through=highest, updated_at=timezone.now()
    )


def refuse_unsummarised(apps, schema_editor):
    state = apps.get_model("tokens", "UsageSummaryState").objects.filter(pk=1).first()
    through = state.summarised_through if state else 0
    if apps.get_model("tokens", "UsageRecord").objects.filter(pk__gt=through).exists():
        raise RuntimeError(
            "Usage records are not all summarised: run manage.py summarise_usage, then migrate back."
        )


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    model = apps.get_model("tokens", "UsageRecord")
    columns = [field.column for field in model._meta.local_concrete_fields]
    retention = apps.get_model("tokens", "ExpirationPolicy").objects.get(pk=1).usage_retention_days
    today = timezone.now().date()
    with connection.cursor() as cursor:
        # A column added by hand SQL but missing from the state would be lost by the copy: refuse.
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'tokens_usagerecord'"
        )
        actual = {name for (name,) in cursor.fetchall()}
        if actual != set(columns):
            raise RuntimeError(
                f"tokens_usagerecord has columns {sorted(actual)}, the migration state {sorted(columns)}"
            )
        cursor.execute("SELECT min(at) FROM tokens_usagerecord")
        (oldest,) = cursor.fetchone()
        first = today if oldest is None else max(oldest.date(), today - timedelta(days=retention + 1))
        cursor.execute("ALTER TABLE tokens_usagerecord RENAME TO tokens_usagerecord_old")
        cursor.execute("ALTER INDEX tokens_usagerecord_pkey RENAME TO tokens_usagerecord_old_pkey")
        # Index and constraint names are the new table's now.
        for index in model._meta.indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(index.name)}")
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'tokens_usagerecord_old'::regclass "
            "AND contype = 'c'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(
                f"ALTER TABLE tokens_usagerecord_old DROP CONSTRAINT {schema_editor.quote_name(name)}"
            )
        # The old identity sequence goes with the old table; the new one carries on from its last id.
        cursor.execute("SELECT pg_get_serial_sequence('tokens_usagerecord_old', 'id')")
        (old_sequence,) = cursor.fetchone()
        cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")
        last_value, is_called = cursor.fetchone()
        cursor.execute("ALTER TABLE tokens_usagerecord_old ALTER COLUMN id DROP IDENTITY")
        cursor.execute(f"CREATE SEQUENCE {SEQUENCE} AS bigint")
        cursor.execute(*partitioned_table(model, schema_editor))
        cursor.execute(f"ALTER SEQUENCE {SEQUENCE} OWNED BY tokens_usagerecord.id")
        cursor.execute(f"SELECT setval('{SEQUENCE}', %s, %s)", [last_value, is_called])
        cursor.execute(f"CREATE TABLE {usage_partitions.DEFAULT} PARTITION OF tokens_usagerecord DEFAULT")
        day = first
        while day <= today + timedelta(days=usage_partitions.AHEAD_DAYS):
            usage_partitions.create_day(cursor, day)
            day += timedelta(days=1)
        listed = ", ".join(schema_editor.quote_name(column) for column in columns)
        cursor.execute(
            f"INSERT INTO tokens_usagerecord ({listed}) SELECT {listed} FROM tokens_usagerecord_old"
        )
        cursor.execute("DROP TABLE tokens_usagerecord_old")
        for index in model._meta.indexes:
            schema_editor.execute(index.create_sql(model, schema_editor))
        cursor.execute("ANALYZE tokens_usagerecord")


def unpartition(apps, schema_editor):
    """Make the usage table a plain one again (PostgreSQL), every row kept with its id."""
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    model = apps.get_model("tokens", "UsageRecord")
    quote = schema_editor.quote_name
    listed = ", ".join(quote(field.column) for field in model._meta.local_concrete_fields)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tokens_usagerecord RENAME TO tokens_usagerecord_parted")
        cursor.execute(
            "ALTER TABLE tokens_usagerecord_parted RENAME CONSTRAINT tokens_usagerecord_pkey "
            "TO tokens_usagerecord_parted_pkey"
        )
        for index in model._meta.indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {quote(index.name)}")
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'tokens_usagerecord_parted'::regclass "
            "AND contype = 'c'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE tokens_usagerecord_parted DROP CONSTRAINT {quote(name)}")
        # The identity sequence of the plain table takes the name back.
        cursor.execute(f"ALTER SEQUENCE {SEQUENCE} RENAME TO tokens_usagerecord_parted_id_seq")
        schema_editor.create_model(model)
        cursor.execute(
            f"INSERT INTO tokens_usagerecord ({listed}) SELECT {listed} FROM tokens_usagerecord_parted"
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('tokens_usagerecord', 'id'), "
            "coalesce((SELECT max(id) FROM tokens_usagerecord), 0) + 1, false)"
        )
        cursor.execute("DROP TABLE tokens_usagerecord_parted")


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0009_rotation"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_trigger, restore_trigger),
        migrations.CreateModel(
            name="UsageSummaryState",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "summarised_through",
                    models.BigIntegerField(default=0, verbose_name="summarised through record id"),
                ),
                ("updated_at", models.DateTimeField(blank=True, null=True, verbose_name="updated at")),
            ],
            options={
                "verbose_name": "usage summary state",
                "verbose_name_plural": "usage summary state",
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("pk", 1)), name="usage_summary_state_single_row"
                    )
                ],
            },
        ),
        migrations.RunPython(start_watermark, refuse_unsummarised),
        migrations.AlterField(
            model_name="usagerecord",
            name="token",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=models.deletion.CASCADE,
                related_name="usage_records",
                to="tokens.token",
                verbose_name="token",
            ),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="legacy_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=models.deletion.CASCADE,
                related_name="usage_records",
                to="tokens.legacyapikey",
                verbose_name="legacy key",
            ),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="user",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="user",
            ),
        ),
        migrations.RunPython(partition, unpartition),
    ]
