"""Least privilege: a token's access level, narrowed permissions and address allow-list; their policy.

Existing tokens keep what they had: read and write, all of the owner's permissions, any address.

On SQLite, adding a NOT NULL column or a constraint rebuilds tokens_token, and SQLite refuses to
rename a table the usage trigger refers to (see 0002): the trigger is dropped first and created
again last, inside the migration's transaction. PostgreSQL adds the columns in place.
"""

import importlib

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
        ("tokens", "0004_attempt_counters"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        DROP_TRIGGER,
        migrations.AddField(
            model_name="expirationpolicy",
            name="default_access",
            field=models.CharField(
                choices=[("read", "Read only"), ("read_write", "Read and write")],
                default="read_write",
                help_text="Preselected on the create form; used by the API and create_token when none is given.",
                max_length=10,
                verbose_name="default access of new tokens",
            ),
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="require_allowed_ips_without_expiry",
            field=models.BooleanField(
                default=False,
                help_text="On: a token that never expires must name the addresses it may be used from.",
                verbose_name="tokens without expiry need an address allow-list",
            ),
        ),
        migrations.AddField(
            model_name="token",
            name="access",
            field=models.CharField(
                choices=[("read", "Read only"), ("read_write", "Read and write")],
                default="read_write",
                help_text="Read only: GET, HEAD and OPTIONS; anything else is refused.",
                max_length=10,
                verbose_name="access",
            ),
        ),
        migrations.AddField(
            model_name="token",
            name="allowed_ips",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="IPv4/IPv6 addresses or networks the token may be used from; empty: anywhere.",
                verbose_name="allowed client addresses",
            ),
        ),
        migrations.AddField(
            model_name="token",
            name="permissions",
            field=models.JSONField(
                blank=True,
                default=None,
                help_text="Empty: all of the owner's permissions. Otherwise a list of “app_label.codename”; the token has those the owner still holds at each request.",
                null=True,
                verbose_name="permissions",
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
                ],
                max_length=20,
                verbose_name="event",
            ),
        ),
        migrations.AddConstraint(
            model_name="token",
            constraint=models.CheckConstraint(
                condition=models.Q(("access__in", ["read", "read_write"])), name="token_access_known"
            ),
        ),
        CREATE_TRIGGER,
    ]
