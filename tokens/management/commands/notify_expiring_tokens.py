from django.core.management.base import BaseCommand, CommandError

from tokens.models import Token


class Command(BaseCommand):
    help = (
        "Email each token owner once about their active tokens that expire within the policy's notice "
        "window (SitePolicy.expiry_notice_days): one email per owner listing every such token with "
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
        report = Token.objects.notify_expiring(dry_run=dry_run)
        for username, count in report.would_mail:
            self.stdout.write(f"Would mail {username} about {count} token(s).")
        if not dry_run:
            self.stdout.write(f"Mailed {report.owners} owner(s) about {report.tokens} expiring token(s).")
        if report.without_email:
            skipped = ", ".join(report.without_email)
            self.stdout.write(f"Skipped owners without an email address: {skipped}.")
        if report.failed:
            raise CommandError(
                "Could not send to: " + ", ".join(report.failed) + ". Check EMAIL_URL; they will be "
                "tried again on the next run."
            )
