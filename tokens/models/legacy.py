from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import credentials
from ..constants import DIGEST_LENGTH, LEGACY_KEY_MAX_LENGTH, LEGACY_KEY_MIN_DISTINCT, LEGACY_KEY_MIN_LENGTH
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


def check_legacy_key_strength(key):
    """Raise ValidationError({"key": …}) unless *key* is too strong to guess online; used at import only.

    The rule: at least LEGACY_KEY_MIN_LENGTH characters, from at least two kinds (lower-case letters,
    upper-case letters, digits, other symbols), with at least LEGACY_KEY_MIN_DISTINCT different
    characters. A 32-character hex key or a UUID passes; "k", a 16-digit number or "aaaa…" does not.
    Keys already imported are not checked again: authentication only applies ``clean_legacy_key``.
    """
    if len(key) < LEGACY_KEY_MIN_LENGTH:
        raise ValidationError(
            {"key": _("The key is too weak: a key must be at least %(n)d characters long.")
             % {"n": LEGACY_KEY_MIN_LENGTH}}
        )
    kinds = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c in "0123456789" else "other"
        for c in key
    }
    if len(kinds) < 2:
        raise ValidationError(
            {"key": _("The key is too weak: it must mix at least two kinds of characters "
                      "(lower-case, upper-case, digits, symbols).")}
        )
    if len(set(key)) < LEGACY_KEY_MIN_DISTINCT:
        raise ValidationError(
            {"key": _("The key is too weak: it must have at least %(n)d different characters.")
             % {"n": LEGACY_KEY_MIN_DISTINCT}}
        )


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


class LegacyApiKeyManager(models.Manager.from_queryset(LegacyApiKeyQuerySet)):
    def import_key(self, *, user, key):
        """Store *key* for *user* as a digest; return (row, created). An already imported key is skipped."""
        key = clean_legacy_key(key)
        check_legacy_key_strength(key)
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
