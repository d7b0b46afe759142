"""Usage records become append-only: no trigger, no foreign keys; summaries behind a watermark; partitions.

1. The trigger of migration 0002 goes: an API request now writes its record and nothing else.
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
timeout is lifted for this migration only. There is no way back: the old trigger would need
summaries the new code no longer keeps in the same transaction.
"""

from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from tokens import usage_partitions

COLUMNS = (
    "id, at, accepted, method, path, status, ip, user_agent, duration_ms, legacy_key_id, token_id, user_id"
)

PARTITIONED = """
CREATE TABLE tokens_usagerecord (
    id bigint NOT NULL DEFAULT nextval('tokens_usagerecord_id_seq'),
    at timestamp with time zone NOT NULL,
    accepted boolean NOT NULL,
    method varchar(10) NOT NULL,
    path varchar(255) NOT NULL,
    status smallint NOT NULL CONSTRAINT tokens_usagerecord_status_check CHECK (status >= 0),
    ip inet NULL,
    user_agent varchar(255) NOT NULL,
    duration_ms double precision NOT NULL,
    legacy_key_id bigint NULL,
    token_id bigint NULL,
    user_id integer NOT NULL,
    CONSTRAINT usage_has_credential CHECK (token_id IS NOT NULL OR legacy_key_id IS NOT NULL),
    CONSTRAINT tokens_usagerecord_pkey PRIMARY KEY (id, at)
) PARTITION BY RANGE (at)
"""

INDEXES = [
    (
        "CREATE INDEX usage_token_at ON tokens_usagerecord (token_id, at DESC, id DESC) "
        "WHERE token_id IS NOT NULL"
    ),
    (
        "CREATE INDEX usage_legacy_at ON tokens_usagerecord (legacy_key_id, at DESC, id DESC) "
        "WHERE legacy_key_id IS NOT NULL"
    ),
    "CREATE INDEX usage_user_at ON tokens_usagerecord (user_id, at DESC)",
    "CREATE INDEX usage_at ON tokens_usagerecord (at)",
]


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


def start_watermark(apps, schema_editor):
    highest = apps.get_model("tokens", "UsageRecord").objects.aggregate(m=models.Max("pk"))["m"] or 0
    apps.get_model("tokens", "UsageSummaryState").objects.create(
        pk=1, summarised_through=highest, updated_at=timezone.now()
    )


def partition(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    retention = apps.get_model("tokens", "ExpirationPolicy").objects.get(pk=1).usage_retention_days
    today = timezone.now().date()
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(at) FROM tokens_usagerecord")
        (oldest,) = cursor.fetchone()
        first = today if oldest is None else max(oldest.date(), today - timedelta(days=retention + 1))
        cursor.execute("ALTER TABLE tokens_usagerecord RENAME TO tokens_usagerecord_old")
        cursor.execute("ALTER INDEX tokens_usagerecord_pkey RENAME TO tokens_usagerecord_old_pkey")
        for index in ("usage_token_at", "usage_legacy_at", "usage_user_at", "usage_at"):
            cursor.execute(f"DROP INDEX {index}")
        cursor.execute("ALTER TABLE tokens_usagerecord_old DROP CONSTRAINT usage_has_credential")
        cursor.execute("ALTER TABLE tokens_usagerecord_old DROP CONSTRAINT tokens_usagerecord_status_check")
        # The old identity sequence goes with the old table; the new one carries on from its last id.
        cursor.execute("SELECT pg_get_serial_sequence('tokens_usagerecord_old', 'id')")
        (old_sequence,) = cursor.fetchone()
        cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")
        last_value, is_called = cursor.fetchone()
        cursor.execute("ALTER TABLE tokens_usagerecord_old ALTER COLUMN id DROP IDENTITY")
        cursor.execute("CREATE SEQUENCE tokens_usagerecord_id_seq AS bigint")
        cursor.execute(PARTITIONED)
        cursor.execute("ALTER SEQUENCE tokens_usagerecord_id_seq OWNED BY tokens_usagerecord.id")
        cursor.execute("SELECT setval('tokens_usagerecord_id_seq', %s, %s)", [last_value, is_called])
        cursor.execute(f"CREATE TABLE {usage_partitions.DEFAULT} PARTITION OF tokens_usagerecord DEFAULT")
        day = first
        while day <= today + timedelta(days=usage_partitions.AHEAD_DAYS):
            usage_partitions.create_day(cursor, day)
            day += timedelta(days=1)
        cursor.execute(
            f"INSERT INTO tokens_usagerecord ({COLUMNS}) SELECT {COLUMNS} FROM tokens_usagerecord_old"
        )
        cursor.execute("DROP TABLE tokens_usagerecord_old")
        for statement in INDEXES:
            cursor.execute(statement)
        cursor.execute("ANALYZE tokens_usagerecord")


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0003_usage_partial_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_trigger),
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
        migrations.RunPython(start_watermark),
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
        migrations.RunPython(partition),
    ]
