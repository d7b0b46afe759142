"""Rotation: a token's replacement (one-to-one), when it was rotated and when its old value stops; policy.

Existing tokens are not rotated; the policy allows overlaps of up to 7 days and self-rotation.

On SQLite, the one-to-one column (unique) and the check constraint rebuild tokens_token, and SQLite
refuses to rename a table the usage trigger refers to (see 0002): the trigger is dropped first and
created again last, inside the migration's transaction, as in 0005. PostgreSQL adds the columns in place.
"""

import datetime
import importlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

trigger = importlib.import_module("tokens.migrations.0002_usage_trigger_and_policy")


def _on_sqlite(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            for statement in statements:
                schema_editor.execute(statement)

    return run


DROP_TRIGGER = migrations.RunPython(_on_sqlite(trigger.SQLITE_REVERSE), _on_sqlite(trigger.SQLITE))
CREATE_TRIGGER = migrations.RunPython(_on_sqlite(trigger.SQLITE), _on_sqlite(trigger.SQLITE_REVERSE))


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0008_gateway"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        DROP_TRIGGER,
        migrations.AddField(
            model_name="expirationpolicy",
            name="max_rotation_overlap",
            field=models.DurationField(
                default=datetime.timedelta(days=7),
                help_text="How long a rotated token's old value may keep working beside the new one. 0: it stops at once.",
                verbose_name="longest rotation overlap",
            ),
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="self_rotation_allowed",
            field=models.BooleanField(
                default=True,
                help_text="On: POST /api/tokens/self/rotate lets a read-and-write token replace its own value (recorded with the caller's address and mailed to the owner).",
                verbose_name="tokens may rotate themselves",
            ),
        ),
        migrations.AddField(
            model_name="token",
            name="replaces",
            field=models.OneToOneField(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="replaced_by",
                to="tokens.token",
                verbose_name="replaces",
            ),
        ),
        migrations.AddField(
            model_name="token",
            name="rotated_at",
            field=models.DateTimeField(blank=True, editable=False, null=True, verbose_name="rotated at"),
        ),
        migrations.AddField(
            model_name="token",
            name="rotation_ends_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="After a rotation: the end of the overlap, when this value stops working.",
                null=True,
                verbose_name="old value works until",
            ),
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
                    ("new_address", "used from a new address"),
                    ("alerts_changed", "new-address alerts switched"),
                    ("purpose_changed", "purpose changed"),
                    ("policy_changed", "policy changed"),
                    ("rotated", "rotated"),
                ],
                max_length=20,
                verbose_name="event",
            ),
        ),
        migrations.AddConstraint(
            model_name="token",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("rotated_at__isnull", True), ("rotation_ends_at__isnull", True)),
                    models.Q(
                        ("rotated_at__isnull", False), ("rotation_ends_at__gte", models.F("rotated_at"))
                    ),
                    _connector="OR",
                ),
                name="token_rotation_ends_after_start",
            ),
        ),
        CREATE_TRIGGER,
    ]
