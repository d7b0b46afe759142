"""Incident response: new-address alerts (the token's switch, the policy's, the delivery log), the new
event kinds, and the lock that keeps the event feed gap-free on PostgreSQL.

* SQLite rebuilds tokens_token to add ``alerts`` and refuses to while the usage trigger refers to the
  table (see 0002): the trigger is dropped before and created again after, in the same transaction.
* PostgreSQL: a statement trigger on tokens_tokenevent takes the feed's advisory lock shared for the
  inserting transaction, before any id is drawn from the sequence (``TokenEventQuerySet.settled_high_water``
  and docs/security.md, "Lock order").
"""

import importlib

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

usage_trigger = importlib.import_module("tokens.migrations.0002_usage_trigger_and_policy")

FEED_LOCK = [
    """
CREATE OR REPLACE FUNCTION tokens_event_feed_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held until the transaction ends: the feed reader sees no event id still in flight.
    PERFORM pg_advisory_xact_lock_shared(1953459045);
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER tokens_event_feed_lock BEFORE INSERT ON tokens_tokenevent
FOR EACH STATEMENT EXECUTE FUNCTION tokens_event_feed_lock()
""",
]
FEED_LOCK_REVERSE = [
    "DROP TRIGGER IF EXISTS tokens_event_feed_lock ON tokens_tokenevent",
    "DROP FUNCTION IF EXISTS tokens_event_feed_lock()",
]


def _on(vendor, statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == vendor:
            for statement in statements:
                schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0006_cutover"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AlertDelivery",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("sent", "mailed"),
                            ("muted", "muted by the owner"),
                            ("capped", "daily limit reached"),
                            ("off", "switched off by the policy"),
                            ("no_email", "owner has no e-mail address"),
                        ],
                        max_length=10,
                        verbose_name="outcome",
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="handled at")),
            ],
            options={
                "verbose_name": "new-address alert",
                "verbose_name_plural": "new-address alerts",
            },
        ),
        migrations.AddField(
            model_name="expirationpolicy",
            name="new_address_alerts",
            field=models.BooleanField(
                default=True,
                help_text=(
                    "Mail owners when a token or legacy key is used from an address it was never used from "
                    "(at most five mails a credential a day; owners can mute each token)."
                ),
                verbose_name="new-address alerts",
            ),
        ),
        migrations.RunPython(
            _on("sqlite", usage_trigger.SQLITE_REVERSE), _on("sqlite", usage_trigger.SQLITE)
        ),
        migrations.AddField(
            model_name="token",
            name="alerts",
            field=models.BooleanField(
                default=True,
                help_text="Mail the owner when the token is used from an address it was never used from.",
                verbose_name="new-address alerts",
            ),
        ),
        migrations.RunPython(
            _on("sqlite", usage_trigger.SQLITE), _on("sqlite", usage_trigger.SQLITE_REVERSE)
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
                ],
                max_length=20,
                verbose_name="event",
            ),
        ),
        migrations.AddIndex(
            model_name="tokenevent",
            index=models.Index(
                condition=models.Q(("kind", "new_address")), fields=["at"], name="event_new_address_at"
            ),
        ),
        migrations.AddConstraint(
            model_name="tokenevent",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "new_address")),
                fields=("token", "ip"),
                name="event_new_address_token",
            ),
        ),
        migrations.AddConstraint(
            model_name="tokenevent",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "new_address")),
                fields=("legacy_key", "ip"),
                name="event_new_address_legacy",
            ),
        ),
        migrations.AddField(
            model_name="alertdelivery",
            name="event",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="alert_delivery",
                to="tokens.tokenevent",
                verbose_name="event",
            ),
        ),
        migrations.AddIndex(
            model_name="alertdelivery",
            index=models.Index(fields=["at"], name="alert_delivery_at"),
        ),
        migrations.RunPython(_on("postgresql", FEED_LOCK), _on("postgresql", FEED_LOCK_REVERSE)),
    ]
