from django.core.management.base import BaseCommand, CommandError

from tokens.models import UsageRecord
from tokens.usage.summarise import summarise


class Command(BaseCommand):
    help = (
        "Fold the usage records not summarised yet into the request counts, last use, daily totals and "
        "client addresses, in short batches. Safe from cron on every node at once (a second run finds the "
        "watermark taken and stops). The pages are exact without it; it keeps what they add up short."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size",
            type=int,
            default=5000,
            help="Records per batch, each its own transaction (default 5000).",
        )
        parser.add_argument(
            "--max-batches",
            type=int,
            default=None,
            help="Stop after this many batches (default: until caught up).",
        )

    def handle(self, *args, batch_size, max_batches, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be a positive number of records, for example 5000.")
        if max_batches is not None and max_batches < 1:
            raise CommandError("--max-batches must be a positive number of batches.")
        folded = summarise(batch_size=batch_size, max_batches=max_batches)
        self.stdout.write(
            f"Summarised {folded} usage record(s); everything up to record "
            f"{UsageRecord.objects.summarised_through()} is in the summaries."
        )
