"""What bearer tokens and legacy keys share: the abstract ``Credential`` model.

Its own module so that ``tokens.py`` and ``legacy.py`` both build on it without importing each other:
the pepper of the digest, revocation (one row lock, one event) and the usage counters the summariser
keeps, which nothing else may save.
"""

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..constants import USER_AGENT_MAX_LENGTH
from .events import TokenEvent


class Credential(models.Model):
    """What bearer tokens and legacy keys share: the pepper of their digest, revocation and last use."""

    # The name of the TokenEvent foreign key that points at this kind of credential.
    event_field = None

    pepper_id = models.PositiveSmallIntegerField(
        verbose_name=_("pepper id"),
        editable=False,
    )
    revoked_at = models.DateTimeField(
        verbose_name=_("revoked at"),
        null=True,
        blank=True,
        editable=False,
    )
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("revoked by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    # Kept by the usage summariser, tokens.usage.summarise (and last_used_at set at first use, see the
    # middleware);
    # read them through usage_totals(), which adds the records not yet summarised.
    last_used_at = models.DateTimeField(
        verbose_name=_("last used at"),
        null=True,
        blank=True,
        editable=False,
    )
    last_used_ip = models.GenericIPAddressField(
        verbose_name=_("last used from"),
        null=True,
        blank=True,
        editable=False,
    )
    last_used_user_agent = models.CharField(
        verbose_name=_("last user agent"),
        max_length=USER_AGENT_MAX_LENGTH,
        blank=True,
        editable=False,
    )
    request_count = models.PositiveBigIntegerField(
        verbose_name=_("requests"),
        default=0,
        editable=False,
    )

    # Kept by the database from the usage records, never written from Python (see save()).
    usage_fields = ("last_used_at", "last_used_ip", "last_used_user_agent", "request_count")

    class Meta:
        abstract = True

    def save(self, *args, update_fields=None, **kwargs):
        """Save the row without ever writing the usage counters.

        They change under every request the credential makes: writing back the values this instance
        read earlier would lose the requests counted since.
        """
        if update_fields is None and not self._state.adding:
            update_fields = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in self.usage_fields
            ]
        elif update_fields is not None and set(update_fields) & set(self.usage_fields):
            raise ValueError("The usage counters are kept by the database; do not save them.")
        super().save(*args, update_fields=update_fields, **kwargs)

    @classmethod
    def revocable(cls, now):
        """Return the Q of rows a revoke at *now* changes (not revoked yet)."""
        return Q(revoked_at__isnull=True)

    def _revoke(self, *, actor, kind, ip=None, detail=""):
        """Revoke from the very next request on and record *kind*; a second revoke changes nothing."""
        now = timezone.now()
        # One row lock, the credential's own (docs/security.md, "Lock order").
        with transaction.atomic():
            changed = (
                type(self)
                .objects.filter(type(self).revocable(now), pk=self.pk)
                .update(revoked_at=now, revoked_by=actor)
            )
            if changed:
                TokenEvent.objects.create(
                    user_id=self.user_id,
                    kind=kind,
                    actor=actor,
                    ip=ip,
                    at=now,
                    detail=detail,
                    **{self.event_field: self},
                )
        self.refresh_from_db(fields=["revoked_at", "revoked_by"])
        return bool(changed)
