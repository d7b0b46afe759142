"""The Activity Stream: one row per change to a token or legacy key, written where the change happens.

This module imports nothing of the app's other models (only the foreign-key pair of ``fields``), so every
other module can import it at the top.
"""

import time

from django.conf import settings
from django.db import connections, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .fields import credential_keys

# The PostgreSQL advisory lock that makes the event feed gap-free (docs/security.md, "Lock order"): every
# INSERT into tokens_tokenevent takes it shared for its transaction (a statement trigger, migration 0007),
# and the feed reader tries to take it exclusively for the one statement that reads the highest id.
EVENT_FEED_LOCK = 0x746F6B65  # "toke"
# How long the feed reader tries for the lock before it answers "nothing new yet".
FEED_SETTLE_TRIES = 20
FEED_SETTLE_PAUSE = 0.01
# A revocation prompted by a leak report has the detail "reported leaked · <source> · <url>" (the parts
# the report gave): written by tokens/leaks.py, read back by TokenEvent.leak_report for the pages. Stored
# untranslated, like every other detail, so that it reads back the same in any language.
LEAK_REPORT_MARK = "reported leaked"
LEAK_REPORT_SEPARATOR = " · "


class TokenEventQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)

    def settled_high_water(self):
        """Return the highest event id below which every id is committed (or will never exist), or None.

        Ids come from a sequence in INSERT order, but transactions commit in any order: a reader that
        saw id 11 committed may not yet see id 10, and a cursor past 11 would skip 10 for ever. On
        PostgreSQL, each inserting transaction holds EVENT_FEED_LOCK shared until it ends; while the
        reader holds it exclusively, no such transaction is in flight, so every id up to the highest
        visible one is final. The reader only *tries* the lock (a short retry, then None: "nothing
        new yet"), so it never queues in front of a writer. SQLite has one writer at a time and
        commits ids in order: the highest visible id is always settled.
        """
        connection = connections[self.db]
        if connection.vendor != "postgresql":
            return self.aggregate(high=models.Max("pk"))["high"] or 0
        for _attempt in range(FEED_SETTLE_TRIES):
            with transaction.atomic(using=self.db), connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [EVENT_FEED_LOCK])
                if cursor.fetchone()[0]:
                    cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {self.model._meta.db_table}")
                    return cursor.fetchone()[0]
            time.sleep(FEED_SETTLE_PAUSE)
        return None

    def feed(self, *, after, limit):
        """Return up to *limit* events with ids above *after*, oldest first, never skipping one.

        Only settled ids are returned (see ``settled_high_water``), so a collector that continues
        after the last id it received gets every event exactly once.
        """
        high = self.settled_high_water()
        if high is None or high <= after:
            return []
        return list(
            self.filter(pk__gt=after, pk__lte=high).select_related("user", "actor").order_by("pk")[:limit]
        )


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
        NEW_ADDRESS = "new_address", _("used from a new address")
        ALERTS_CHANGED = "alerts_changed", _("new-address alerts switched")
        PURPOSE_CHANGED = "purpose_changed", _("purpose changed")
        POLICY_CHANGED = "policy_changed", _("policy changed")
        # On both tokens of a rotation: the old one (detail: its replacement, when it stops) and the new.
        ROTATED = "rotated", _("rotated")
        # Keyless CI: a job's token traded for a token (on the minted token), refused (detail: why, for
        # the owner's eyes only), and the owner's trust policies created, changed or deleted.
        EXCHANGED = "exchanged", _("minted for a CI job")
        EXCHANGE_REFUSED = "exchange_refused", _("CI job refused")
        TRUST_CHANGED = "trust_changed", _("trust policy changed")
        # Service accounts (user: the account; actor: the person who acted).
        ACCOUNT_CREATED = "account_created", _("service account created")
        TEAM_CHANGED = "team_changed", _("moved to another team")
        ACCOUNT_DEACTIVATED = "account_deactivated", _("service account deactivated")
        ACCOUNT_ACTIVATED = "account_activated", _("service account activated")
        ACCOUNT_UNMANAGED = "account_unmanaged", _("no manager left")
        # A person's token given to a service account (on the token, the old owner and each manager).
        TOKEN_MOVED = "token_moved", _("token moved to a service account")
        # SCIM provisioning switched the owner off or on again (actor and detail: the provider's account).
        DEACTIVATED = "deactivated", _("owner deactivated by the identity provider")
        REACTIVATED = "reactivated", _("owner reactivated by the identity provider")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="token_events",
        db_index=False,
    )
    token, legacy_key = credential_keys(related_name="events")
    kind = models.CharField(verbose_name=_("event"), max_length=20, choices=Kind.choices)
    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    detail = models.CharField(verbose_name=_("detail"), max_length=255, blank=True)

    objects = TokenEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("activity event")
        verbose_name_plural = _("activity stream")
        ordering = ("-at", "-id")
        indexes = [
            models.Index(fields=["user", "-at"], name="event_user_at"),
            # The alert sender's scan: the recent "new address" events.
            models.Index(fields=["at"], name="event_new_address_at", condition=Q(kind="new_address")),
        ]
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
            # One "new address" event per credential and address: two first requests at once write one.
            models.UniqueConstraint(
                fields=["token", "ip"], condition=Q(kind="new_address"), name="event_new_address_token"
            ),
            models.UniqueConstraint(
                fields=["legacy_key", "ip"], condition=Q(kind="new_address"), name="event_new_address_legacy"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.at:%Y-%m-%d %H:%M}"

    @property
    def leak_report(self):
        """For a revocation prompted by a leak report, the list of what the report said of where the value
        was found (its source, its URL; empty when it said nothing); None for any other event."""
        revocations = (self.Kind.REVOKED, self.Kind.LEGACY_REVOKED)
        if self.kind not in revocations or self.detail.split(LEAK_REPORT_SEPARATOR)[0] != LEAK_REPORT_MARK:
            return None
        return self.detail.split(LEAK_REPORT_SEPARATOR)[1:]
