"""The Activity Stream: one row per change to a token or legacy key, written where the change happens.

This module imports nothing of the app's other models, so every other module can import it at the top.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class TokenEventQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)


class TokenEvent(models.Model):
    """One entry of the Activity Stream, written where the change happens."""

    class Kind(models.TextChoices):
        CREATED = "created", _("created")
        RENAMED = "renamed", _("renamed")
        REVOKED = "revoked", _("revoked")
        EXPIRED = "expired", _("expired")
        SHORTENED = "shortened", _("expiry shortened")
        FIRST_USED = "first_used", _("first used")
        LEGACY_USED = "legacy_used", _("legacy key used")
        LEGACY_REVOKED = "legacy_revoked", _("legacy key revoked")
        ACCESS_CHANGED = "access_changed", _("access changed")
        PERMISSIONS_CHANGED = "permissions_changed", _("permissions changed")
        ADDRESSES_CHANGED = "addresses_changed", _("allowed addresses changed")
        # The cutover: the policy's changes (user and actor: the administrator) and the owners' notices.
        LEVEL_CHANGED = "level_changed", _("security level changed")
        REHEARSAL_CHANGED = "rehearsal_changed", _("rehearsal changed")
        BROWNOUT_CHANGED = "brownout_changed", _("brownout window changed")
        SUNSET_CHANGED = "sunset_changed", _("legacy sunset changed")
        LEGACY_NOTIFIED = "legacy_notified", _("legacy key owner notified")
        # On both tokens of a rotation: the old one (detail: its replacement, when it stops) and the new.
        ROTATED = "rotated", _("rotated")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.CASCADE, related_name="token_events",
        db_index=False,
    )
    token = models.ForeignKey(
        "tokens.Token", verbose_name=_("token"), on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    legacy_key = models.ForeignKey(
        "tokens.LegacyApiKey", verbose_name=_("legacy key"), on_delete=models.CASCADE, null=True, blank=True,
        related_name="events",
    )
    kind = models.CharField(verbose_name=_("event"), max_length=20, choices=Kind.choices)
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("by"), on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    detail = models.CharField(verbose_name=_("detail"), max_length=255, blank=True)

    objects = TokenEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("activity event")
        verbose_name_plural = _("activity stream")
        ordering = ("-at", "-id")
        indexes = [models.Index(fields=["user", "-at"], name="event_user_at")]
        constraints = [
            # These happen once per token; the constraint makes concurrent writers harmless.
            models.UniqueConstraint(
                fields=["token", "kind"],
                condition=Q(kind__in=["created", "expired", "first_used", "revoked"]),
                name="event_once_per_token",
            ),
            # At most one "legacy key used" entry per key and day (detail holds the ISO date).
            models.UniqueConstraint(
                fields=["legacy_key", "kind", "detail"],
                condition=Q(kind="legacy_used"),
                name="event_legacy_use_per_day",
            ),
            # At most one cutover notice per key and day (detail holds the ISO date): a second send
            # the same day finds the row taken and mails nothing.
            models.UniqueConstraint(
                fields=["legacy_key", "kind", "detail"],
                condition=Q(kind="legacy_notified"),
                name="event_legacy_notice_per_day",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.at:%Y-%m-%d %H:%M}"
