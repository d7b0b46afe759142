"""Send the new-address alerts: off the request path, from ``manage.py send_alerts`` (cron or ``--loop``).

Each pending ``new_address`` event is claimed once (``AlertDelivery.objects.claim``), so several
senders never mail the same event twice; a mail that fails is unclaimed and tried again next run.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from .models import AlertDelivery, SitePolicy
from .models.alerts import ALERTS_PER_DAY
from .models.service_accounts import notice_recipients
from .notifications import absolute_url, mail_each

log = logging.getLogger(__name__)

Outcome = AlertDelivery.Outcome


@dataclass
class Report:
    """How many events ended how, and the owners whose mail failed (tried again next run)."""

    outcomes: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)

    def count(self, outcome):
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _outcome(event, policy, now):
    """Return what to do with *event*: Outcome.SENT to mail it, or why not."""
    if not policy.new_address_alerts:
        return Outcome.SWITCHED_OFF
    # Decided by when the use happened, not by the switch now: muting cannot cancel the alert
    # about a use made before it (a thief muting the token right after their first use).
    if event.token_id and event.token.alerts_muted_for(event.at):
        return Outcome.MUTED
    # A person's own address, or the addresses of a service account's managers.
    if not notice_recipients(event.user):
        return Outcome.NO_EMAIL
    if AlertDelivery.objects.sent_since(now - timedelta(days=1), event=event).count() >= ALERTS_PER_DAY:
        return Outcome.CAPPED
    return Outcome.SENT


def send_pending(now=None):
    """Mail the owner of each pending ``new_address`` event (at most ALERTS_PER_DAY a credential a day)."""
    now = now or timezone.now()
    policy = SitePolicy.load()
    report = Report()
    for event in AlertDelivery.objects.pending_events(now):
        outcome = _outcome(event, policy, now)
        if not AlertDelivery.objects.claim(event, outcome=outcome, now=now):
            continue  # another sender has it
        if outcome == Outcome.SENT:
            try:
                _send(event)
            except Exception as error:
                AlertDelivery.objects.filter(event=event).delete()
                report.failed.append(f"{event.user.get_username()} ({type(error).__name__})")
                continue
        report.count(outcome)
    return report


def _send(event):
    # A link to the credential's page, where it can be revoked; the value is nowhere in the mail.
    if event.token_id:
        credential_url = absolute_url("tokens:detail", event.token_id)
    else:
        credential_url = absolute_url("tokens:list")
    context = {
        "event": event,
        "name": event.token.name if event.token_id else "",
        "last_characters": event.token.last_characters if event.token_id else "",
        "key_id": event.legacy_key_id,
        "user_agent": event.detail,
        "credential_url": credential_url,
    }
    # A person's own address, or the addresses of a service account's managers.
    mail_each(notice_recipients(event.user), "new_address", context, owner=event.user)
