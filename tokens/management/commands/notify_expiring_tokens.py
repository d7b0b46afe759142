from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.core.mail import send_mail
from django.core.management.base import BaseCommand, CommandError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from tokens.models import ExpirationPolicy, Token
from tokens.models.service_accounts import notice_recipients


class Command(BaseCommand):
    help = (
        "Email each token owner once about their active tokens that expire within the policy's notice "
        "window (ExpirationPolicy.expiry_notice_days): one email per owner listing every such token with "
        "its expiry, a link to its page and one to rotate it. Safe to run daily from cron: a token is mailed "
        "once per "
        "window; if its expiry is later moved and it approaches again, it is mailed again. Also writes "
        'the Activity Stream\'s "expired" events for tokens that have expired.'
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Say who would be mailed; send and mark nothing."
        )

    def handle(self, *args, dry_run, **options):
        now = timezone.now()
        if not dry_run:
            Token.objects.record_expiries(now=now)
        window = timedelta(days=ExpirationPolicy.load().expiry_notice_days)
        due = (
            Token.objects.due_for_expiry_notice(window, now)
            .select_related("user")
            .order_by("user_id", "expires_at", "pk")
        )
        mailed_owners = mailed_tokens = 0
        without_email, failed = [], []
        for user, tokens in groupby(due, key=lambda token: token.user):
            tokens = list(tokens)
            # A service account's notice goes to each of its managers instead (one mail each).
            recipients = notice_recipients(user)
            if not recipients:
                without_email.append(user.get_username())
                continue
            if dry_run:
                self.stdout.write(f"Would mail {user.get_username()} about {len(tokens)} token(s).")
                continue
            claimed_ids = Token.objects.claim_expiry_notice([t.pk for t in tokens], window, now)
            claimed = [token for token in tokens if token.pk in claimed_ids]
            if not claimed:
                continue  # another run is mailing this owner right now
            try:
                for person in recipients:
                    self._send(person, claimed, owner=user)
            except Exception as error:
                # Unmark, so the next run tries again.
                Token.objects.filter(pk__in=[t.pk for t in claimed], expiry_notified_at=now).update(
                    expiry_notified_at=None
                )
                failed.append(f"{user.get_username()} ({type(error).__name__})")
                continue
            mailed_owners += 1
            mailed_tokens += len(claimed)
        verb = "Would mail" if dry_run else "Mailed"
        if not dry_run:
            self.stdout.write(f"{verb} {mailed_owners} owner(s) about {mailed_tokens} expiring token(s).")
        if without_email:
            self.stdout.write("Skipped owners without an email address: " + ", ".join(without_email) + ".")
        if failed:
            raise CommandError(
                "Could not send to: " + ", ".join(failed) + ". Check EMAIL_URL; they will be "
                "tried again on the next run."
            )

    @staticmethod
    def _send(user, tokens, *, owner):
        # Each token's own page and its rotate page; the value is nowhere in the mail.
        base = settings.SITE_URL + reverse("tokens:list")
        context = {
            "user": user,
            "service_account": owner if owner != user else None,
            "tokens": [
                {
                    "name": t.name,
                    "expires_at": t.expires_at,
                    "url": settings.SITE_URL + reverse("tokens:detail", args=[t.pk]),
                    "rotate_url": settings.SITE_URL + reverse("tokens:rotate", args=[t.pk]),
                }
                for t in tokens
            ],
            "list_url": base,
            "site_url": settings.SITE_URL,
        }
        subject = render_to_string("email/expiring_tokens_subject.txt", context).strip()
        body = render_to_string("email/expiring_tokens.txt", context)
        send_mail(subject, body, None, [user.email])
