"""Attempt counters for the throttles (atomic UPSERT), and refused unknown credentials per address and hour."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0003_usage_partial_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="AttemptCounter",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=100, unique=True, verbose_name="key")),
                ("window_start", models.DateTimeField(verbose_name="window start")),
                ("hits", models.PositiveIntegerField(default=0, verbose_name="attempts")),
            ],
            options={
                "verbose_name": "attempt counter",
                "verbose_name_plural": "attempt counters",
                "indexes": [models.Index(fields=["window_start"], name="attempt_window_start")],
            },
        ),
        migrations.CreateModel(
            name="RefusedClient",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("ip", models.GenericIPAddressField(verbose_name="client IP")),
                ("hour", models.DateTimeField(verbose_name="hour")),
                ("attempts", models.PositiveBigIntegerField(default=0, verbose_name="refused attempts")),
                ("first_seen", models.DateTimeField(verbose_name="first seen")),
                ("last_seen", models.DateTimeField(verbose_name="last seen")),
                (
                    "last_user_agent",
                    models.CharField(blank=True, max_length=255, verbose_name="last user agent"),
                ),
            ],
            options={
                "verbose_name": "refused unknown credential",
                "verbose_name_plural": "refused unknown credentials",
                "ordering": ("-hour", "-attempts"),
                "indexes": [models.Index(fields=["hour"], name="refused_client_hour")],
                "constraints": [
                    models.UniqueConstraint(fields=("ip", "hour"), name="refused_client_ip_hour")
                ],
            },
        ),
    ]
