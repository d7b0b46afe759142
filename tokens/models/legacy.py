from datetime import UTC, datetime, time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import credentials
from ..constants import DIGEST_LENGTH, LEGACY_KEY_MAX_LENGTH
from .base import Credential
from .events import TokenEvent


def clean_legacy_key(key):
    """Return *key* if it is a key the API could accept, or raise ValidationError({"key": …}).

    The same rule serves the import and authentication: a key that could never sign in is not imported.
    """
    if not key or len(key) > LEGACY_KEY_MAX_LENGTH or not key.isascii() or not key.isprintable() or key != key.strip():
        raise ValidationError(
            {"key": _("A key must be 1 to %(n)d printable ASCII characters without surrounding spaces.")
             % {"n": LEGACY_KEY_MAX_LENGTH}}
        )
    return key


class LegacyApiKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def find(self, key):
        """Return the key row matching plaintext *key* under any configured pepper, or None."""
        digests = credentials.legacy_digests(key)
        for row in self.filter(digest__in=digests.values()).select_related("user"):
            if digests.get(row.pepper_id) == row.digest:
                return row
        return None


    def mark_first_use_of_day(self, pk, *, at):
        """Set the last use of key *pk* to *at* unless it was used earlier that UTC day; return True if set.

        The request path's write to a key row: once a day per key, for the "legacy key used" event and
        the "never used" filter (the summariser keeps the last use current in between). Only the key's
        row is locked (docs/security.md, "Lock order", step 2).
        """
        day_start = datetime.combine(at.astimezone(UTC).date(), time.min, tzinfo=UTC)
        return bool(
            self.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=day_start), pk=pk).update(
                last_used_at=at
            )
        )


class LegacyApiKeyManager(models.Manager.from_queryset(LegacyApiKeyQuerySet)):
    def import_key(self, *, user, key):
        """Store *key* for *user* as a digest; return (row, created). An already imported key is skipped."""
        key = clean_legacy_key(key)
        existing = self.find(key)
        if existing is not None:
            if existing.user_id != user.pk:
                raise ValidationError({"key": _("This key is already imported for another user.")})
            return existing, False
        pepper = credentials.peppers()[0]
        # A new row; its foreign key takes FOR KEY SHARE on the owner, like a usage INSERT
        # (docs/security.md, "Lock order").
        with transaction.atomic():
            row = self.create(
                user=user,
                digest=credentials.digest(key, pepper),
                pepper_id=pepper.id,
            )
        return row, True


class LegacyApiKey(Credential):
    """A deprecated per-user API key, imported from the old system. Only its digest is kept."""

    event_field = "legacy_key"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="legacy_api_keys",
    )
    digest = models.CharField(
        verbose_name=_("digest"),
        max_length=DIGEST_LENGTH,
        unique=True,
        editable=False,
    )
    imported_at = models.DateTimeField(
        verbose_name=_("imported at"),
        default=timezone.now,
        editable=False,
    )
    objects = LegacyApiKeyManager()

    class Meta:
        verbose_name = _("legacy API key")
        verbose_name_plural = _("legacy API keys")
        ordering = ("-imported_at", "-id")
        indexes = [models.Index(fields=["user"], name="legacy_key_user")]

    def __str__(self):
        return _("Legacy key #%(id)s of %(user)s") % {"id": self.pk, "user": self.user}

    @property
    def status(self):
        return "revoked" if self.revoked_at else "active"

    def revoke(self, *, actor):
        """Refuse the key from the very next request on. A second revoke changes nothing."""
        return self._revoke(actor=actor, kind=TokenEvent.Kind.LEGACY_REVOKED)
