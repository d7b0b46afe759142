"""The cutover: security levels (replacing the legacy-keys switch), rehearsal, brownout windows, notices."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def map_legacy_switch_to_level(apps, schema_editor):
    """Give a configured site the level it was effectively at: nobody's access changes on migrate.

    Keys switched off, or a sunset already passed: ``high``. Otherwise ``compatibility`` (the field's
    default); a sunset still to come keeps working as before, since a passed sunset means ``high``.
    """
    Policy = apps.get_model("tokens", "ExpirationPolicy")
    now = timezone.now()
    Policy.objects.filter(legacy_keys_accepted=False).update(security_level="high")
    Policy.objects.filter(legacy_sunset_at__lte=now).update(security_level="high")


def map_level_to_legacy_switch(apps, schema_editor):
    # Back to the yes/no switch: any level that refuses legacy keys is "switched off".
    Policy = apps.get_model("tokens", "ExpirationPolicy")
    Policy.objects.exclude(security_level="compatibility").update(legacy_keys_accepted=False)


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0005_least_privilege"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BrownoutWindow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("starts_at", models.DateTimeField(verbose_name="starts at")),
                ("ends_at", models.DateTimeField(verbose_name="ends at")),
                ("note", models.CharField(blank=True, max_length=200, verbose_name="note")),
            ],
            options={
                "verbose_name": "brownout window",
                "verbose_name_plural": "brownout windows",
                "ordering": ("starts_at",),
            },
        ),
        migrations.CreateModel(
            name="RehearsedSessionRequest",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="time")),
                ("method", models.CharField(max_length=10, verbose_name="method")),
                ("path", models.CharField(max_length=255, verbose_name="path")),
                ("ip", models.GenericIPAddressField(blank=True, null=True, verbose_name="client IP")),
                ("user_agent", models.CharField(blank=True, max_length=255, verbose_name="user agent")),
            ],
            options={
                "verbose_name": "rehearsed session request",
                "verbose_name_plural": "rehearsed session requests",
            },
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="rehearsal_level",
            field=models.CharField(
                choices=[
                    ("none", "No rehearsal"),
                    ("high", "Rehearse High (count legacy-key requests)"),
                    ("bearer_only", "Rehearse Bearer only (count legacy-key and session requests)"),
                ],
                default="none",
                help_text="Requests this level would refuse are still served, and counted on the migration overview.",
                max_length=20,
                verbose_name="rehearsal",
            ),
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="rehearsal_started_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="rehearsal started at"
            ),
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="security_level",
            field=models.CharField(
                choices=[
                    ("compatibility", "Compatibility: bearer tokens, legacy keys and browser sessions"),
                    ("high", "High: bearer tokens and browser sessions; legacy keys refused"),
                    ("bearer_only", "Bearer only: bearer tokens; legacy keys and browser sessions refused"),
                ],
                default="compatibility",
                help_text="Which credentials reach the API. Raising it takes effect on the very next request.",
                max_length=20,
                verbose_name="security level",
            ),
        ),
        migrations.RunPython(map_legacy_switch_to_level, map_level_to_legacy_switch),
        migrations.RemoveField(
            model_name="expirationpolicy",
            name="legacy_keys_accepted",
        ),
        # A plain ADD COLUMN with a constant default, on both databases: Django would rebuild the table
        # on SQLite (NOT NULL with a default), which drops migration 0002's trigger; PostgreSQL adds
        # such a column without rewriting the table.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE tokens_usagerecord ADD COLUMN would_refuse bool DEFAULT false NOT NULL",
                    "ALTER TABLE tokens_usagerecord DROP COLUMN would_refuse",
                ),
            ],
            state_operations=[
                migrations.AddField(
                    model_name="usagerecord",
                    name="would_refuse",
                    field=models.BooleanField(
                        db_default=False, default=False, verbose_name="would be refused"
                    ),
                ),
            ],
        ),
        migrations.AlterField(
            model_name="tokenevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("created", "created"),
                    ("renamed", "renamed"),
                    ("revoked", "revoked"),
                    ("expired", "expired"),
                    ("shortened", "expiry shortened"),
                    ("first_used", "first used"),
                    ("legacy_used", "legacy key used"),
                    ("legacy_revoked", "legacy key revoked"),
                    ("access_changed", "access changed"),
                    ("permissions_changed", "permissions changed"),
                    ("addresses_changed", "allowed addresses changed"),
                    ("level_changed", "security level changed"),
                    ("rehearsal_changed", "rehearsal changed"),
                    ("brownout_changed", "brownout window changed"),
                    ("sunset_changed", "legacy sunset changed"),
                    ("legacy_notified", "legacy key owner notified"),
                ],
                max_length=20,
                verbose_name="event",
            ),
        ),
        migrations.AddConstraint(
            model_name="tokenevent",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "legacy_notified")),
                fields=("legacy_key", "kind", "detail"),
                name="event_legacy_notice_per_day",
            ),
        ),
        migrations.AddField(
            model_name="brownoutwindow",
            name="policy",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="brownouts",
                to="tokens.expirationpolicy",
                verbose_name="policy",
            ),
        ),
        migrations.AddField(
            model_name="rehearsedsessionrequest",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
                verbose_name="user",
            ),
        ),
        migrations.AddIndex(
            model_name="brownoutwindow",
            index=models.Index(fields=["ends_at", "starts_at"], name="brownout_ends"),
        ),
        migrations.AddConstraint(
            model_name="brownoutwindow",
            constraint=models.CheckConstraint(
                condition=models.Q(("ends_at__gt", models.F("starts_at"))), name="brownout_ends_after_start"
            ),
        ),
        migrations.AddIndex(
            model_name="rehearsedsessionrequest",
            index=models.Index(fields=["at"], name="rehearsed_session_at"),
        ),
    ]
