import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from tokens.models import AttemptCounter, ExpirationPolicy, RefusedClient, UsageRecord


class Command(BaseCommand):
    help = (
        "Delete usage records older than the policy's retention (ExpirationPolicy.usage_retention_days), "
        "in small batches by id range, each its own short transaction, so it is safe to run from cron "
        "while the site serves traffic. Per-day totals, client addresses and request counts are kept, "
        "so charts and totals survive."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help="Ids per batch (default 5000). Smaller batches hold the write lock for less time.",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=0.0,
            help="Seconds to sleep between batches, to leave room for traffic (default 0).",
        )

    def handle(self, *args, dry_run, batch_size, pause, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be a positive number of rows, for example 5000.")
        if pause < 0:
            raise CommandError("--pause must be zero or a positive number of seconds.")
        retention = ExpirationPolicy.load().usage_retention_days
        cutoff = timezone.now() - timedelta(days=retention)
        old = UsageRecord.objects.older_than(cutoff)
        if dry_run:
            self.stdout.write(
                f"Would delete {old.count()} usage record(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
                f"(retention {retention} days). Nothing was deleted."
            )
            return
        bounds = old.aggregate(low=Min("pk"), high=Max("pk"))
        deleted = batches = 0
        if bounds["low"] is not None:
            # Old usage rows only: no lock any request takes (docs/security.md, "Lock order").
            # Id ranges rather than OFFSET or one big DELETE: each batch is an indexed range scan and a
            # short transaction, so API requests that insert records are never held up for long.
            for start in range(bounds["low"], bounds["high"] + 1, batch_size):
                with transaction.atomic():
                    count, _by_model = old.filter(pk__gte=start, pk__lt=start + batch_size).delete()
                deleted += count
                batches += 1
                if pause and start + batch_size <= bounds["high"]:
                    time.sleep(pause)
        # Throttle counters past any window and refused-credential rows past the retention: small tables.
        AttemptCounter.objects.expired().delete()
        RefusedClient.objects.older_than(cutoff).delete()
        self.stdout.write(
            f"Deleted {deleted} usage record(s) older than {cutoff:%Y-%m-%d %H:%M} UTC "
            f"(retention {retention} days) in {batches} batch(es). "
            "Daily totals and request counts are unchanged."
        )
