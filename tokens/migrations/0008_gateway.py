# The "introspect tokens" permission (RFC 7662, POST /api/introspect).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = (("tokens", "0007_incident_response"),)

    operations = (
        migrations.AlterModelOptions(
            name="token",
            options={
                "ordering": ("-created_at", "-id"),
                "permissions": (("introspect_token", "Can introspect tokens"),),
                "verbose_name": "token",
                "verbose_name_plural": "tokens",
            },
        ),
    )
