"""The (token or legacy key) pair of foreign keys, for rows that belong to one credential or the other.

Usage records, their summaries and Activity Stream events each point at a bearer token or at a legacy
key: two nullable foreign keys, and indexes or unique constraints made twice, once per kind, each
partial on its own key being set. This module builds them, so that the pair is written once. It imports
nothing of the app's models: every model module may import it at the top.
"""

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

# The two kinds of credential a row can belong to: (field name, model).
CREDENTIAL_KEYS = (("token", "tokens.Token"), ("legacy_key", "tokens.LegacyApiKey"))
LABELS = {"token": _("token"), "legacy_key": _("legacy key")}


def credential_keys(*, related_name, labelled=True, **options):
    """Return the nullable (token, legacy_key) foreign keys, both named *related_name* from the credential.

    *labelled*: with their translated labels (the summaries' keys have none). *options* go to both
    fields (``db_index``, ``db_constraint``).
    """
    return tuple(
        models.ForeignKey(
            model,
            on_delete=models.CASCADE,
            null=True,
            blank=True,
            related_name=related_name,
            **({"verbose_name": LABELS[name]} if labelled else {}),
            **options,
        )
        for name, model in CREDENTIAL_KEYS
    )


def per_credential(make, fields, *, names):
    """Return ``make`` (an Index or a UniqueConstraint) twice: on token + *fields*, on legacy_key + *fields*.

    Each is partial, over the rows of its own kind of credential only; *names* are (token's, legacy
    key's).
    """
    return [
        make(fields=[key, *fields], condition=Q(**{f"{key}__isnull": False}), name=name)
        for (key, _model), name in zip(CREDENTIAL_KEYS, names, strict=True)
    ]
