"""Usage records: the token and legacy-key indexes only hold the rows that have one, in page order.

A record has a token or a legacy key, never both, so every API request wrote a NULL entry into the
other index for nothing. The indexes also get ``id DESC`` after ``at DESC``: the pages list requests
newest first with the id breaking ties, and an index in exactly that order serves a page by walking
a few entries, whatever the other tokens' traffic, with no sort. On PostgreSQL the new indexes are built CONCURRENTLY under a temporary name,
the old ones dropped CONCURRENTLY, and the new ones renamed: API requests keep being recorded while
the migration runs, however many records there are (hence ``atomic = False``). SQLite has no
concurrent builds and no index rename: it drops and creates them, holding its write lock for the
time of the build (run it in a quiet moment on a large database).
"""

from django.db import migrations, models
from django.db.models import Q

FIELDS = {"usage_token_at": ("token", "-at"), "usage_legacy_at": ("legacy_key", "-at")}


def _index(name, partial, temporary=False):
    """The index as 0001 made it (*partial* False), or as it is now: partial, with ``-id`` for ties."""
    fields, name = FIELDS[name], f"{name}_tmp" if temporary else name
    if partial:
        return models.Index(
            fields=[*fields, "-id"], name=name, condition=Q(**{f"{fields[0]}__isnull": False})
        )
    return models.Index(fields=list(fields), name=name)


def _replace(partial):
    """Return a migration function swapping each index for its partial (or full) version."""

    def run(apps, schema_editor):
        model = apps.get_model("tokens", "UsageRecord")
        for name in FIELDS:
            old, new = _index(name, not partial), _index(name, partial)
            if schema_editor.connection.vendor == "postgresql":
                building = _index(name, partial, temporary=True)
                schema_editor.add_index(model, building, concurrently=True)
                schema_editor.remove_index(model, old, concurrently=True)
                schema_editor.rename_index(model, building, new)
            else:
                schema_editor.remove_index(model, old)
                schema_editor.add_index(model, new)

    return run


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("tokens", "0002_usage_trigger_and_policy")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(_replace(partial=True), _replace(partial=False))],
            state_operations=[
                migrations.RemoveIndex(model_name="usagerecord", name="usage_token_at"),
                migrations.RemoveIndex(model_name="usagerecord", name="usage_legacy_at"),
                migrations.AddIndex(model_name="usagerecord", index=_index("usage_token_at", partial=True)),
                migrations.AddIndex(model_name="usagerecord", index=_index("usage_legacy_at", partial=True)),
            ],
        ),
    ]
