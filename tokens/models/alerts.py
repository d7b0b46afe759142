"""New-address alerts: the request path notes a credential's first use from an address, a command mails it.

The request path writes only a ``new_address`` event (``is_new_address``: two small queries for a
request from another address than the last use's; ``record_new_address``: a rare insert). Everything slow,
the mail, happens off it: ``manage.py send_alerts`` reads the recent ``new_address`` events that
have no ``AlertDelivery`` yet, claims each one by inserting its delivery row (unique per event, so
two senders never mail the same event) and mails the owner, at most ``ALERTS_PER_DAY`` times per
credential in any 24 hours.
"""

from datetime import timedelta

from django.db import IntegrityError, models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .events import TokenEvent
from .usage import UsageRecord, storable

ALERTS_PER_DAY = 5
# Events older than this are no longer worth a mail (the sender was down): they are marked skipped.
ALERT_MAX_AGE = timedelta(hours=24)


def is_new_address(*, token_id=None, legacy_key_id=None, ip, last_ip=None):
    """Tell whether a request from *ip* is the credential's first from that address.

    The one place that decides "new address", asked before the request's own usage record is
    written: new means no record of the credential from *ip*, summarised or not
    (``UsageRecord.objects.address_is_new``: the summaries' unique (credential, ip) row, or the
    unsummarised tail). Two first requests at the same moment may both find it new; the event's
    unique constraint (credential, ip) makes them write one.

    Free for the usual request: one from the address of the credential's last accepted use
    (*last_ip*, which authentication read anyway) cannot be new. Any other costs two small queries
    (the watermark, then the two index probes).
    """
    if ip is None or ip == last_ip:
        return False
    return UsageRecord.objects.address_is_new(ip=ip, token_id=token_id, legacy_key_id=legacy_key_id)


def record_new_address(*, token_id=None, legacy_key_id=None, user_id, ip, at, user_agent=""):
    """Write the ``new_address`` event for a request from *ip* that ``is_new_address`` found new.

    The event's detail is the client's user agent, NUL and lone surrogates escaped as in the usage
    record (``storable``): PostgreSQL refuses NUL in text, and the request would fail with it.
    """
    credential = {"token_id": token_id} if token_id is not None else {"legacy_key_id": legacy_key_id}
    TokenEvent.objects.bulk_create(
        [
            TokenEvent(
                user_id=user_id,
                kind=TokenEvent.Kind.NEW_ADDRESS,
                at=at,
                ip=ip,
                detail=storable(user_agent, 255),
                **credential,
            )
        ],
        ignore_conflicts=True,
    )


class AlertDeliveryQuerySet(models.QuerySet):
    def sent_since(self, moment, *, event):
        """Return the alerts mailed since *moment* about the credential of *event*."""
        if event.token_id:
            credential = {"event__token_id": event.token_id}
        else:
            credential = {"event__legacy_key_id": event.legacy_key_id}
        return self.filter(outcome=AlertDelivery.Outcome.SENT, at__gte=moment, **credential)


class AlertDeliveryManager(models.Manager.from_queryset(AlertDeliveryQuerySet)):
    def pending_events(self, now=None):
        """Return the recent ``new_address`` events nobody has handled yet, oldest first."""
        now = now or timezone.now()
        return (
            TokenEvent.objects.filter(kind=TokenEvent.Kind.NEW_ADDRESS, at__gte=now - ALERT_MAX_AGE)
            .filter(alert_delivery__isnull=True)
            .select_related("user", "token", "legacy_key")
            .order_by("at", "pk")
        )

    def claim(self, event, *, outcome, now=None):
        """Record how *event* was handled; return False if another sender claimed it first."""
        try:
            with transaction.atomic():
                self.create(event=event, outcome=outcome, at=now or timezone.now())
        except IntegrityError:
            return False
        return True


class AlertDelivery(models.Model):
    """What became of one ``new_address`` event: mailed, or why not."""

    class Outcome(models.TextChoices):
        SENT = "sent", _("mailed")
        MUTED = "muted", _("muted by the owner")
        CAPPED = "capped", _("daily limit reached")
        SWITCHED_OFF = "off", _("switched off by the policy")
        NO_EMAIL = "no_email", _("owner has no e-mail address")

    event = models.OneToOneField(
        TokenEvent, verbose_name=_("event"), on_delete=models.CASCADE, related_name="alert_delivery"
    )
    outcome = models.CharField(verbose_name=_("outcome"), max_length=10, choices=Outcome.choices)
    at = models.DateTimeField(verbose_name=_("handled at"), default=timezone.now)

    objects = AlertDeliveryManager()

    class Meta:
        verbose_name = _("new-address alert")
        verbose_name_plural = _("new-address alerts")
        indexes = [models.Index(fields=["at"], name="alert_delivery_at")]

    def __str__(self):
        return f"{self.get_outcome_display()} {self.at:%Y-%m-%d %H:%M}"
