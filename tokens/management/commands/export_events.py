"""``manage.py export_events``: the Activity Stream as JSON lines for a SIEM, like ``GET /api/events``."""

import json

from django.core.management.base import BaseCommand, CommandError

from tokens.api.incident import MAX_EVENT_ID, event_json
from tokens.models import TokenEvent

BATCH = 1000


class Command(BaseCommand):
    help = (
        "Print every Activity Stream event after an id, oldest first, one JSON object a line (the shape "
        "of GET /api/events), for a SIEM. Only settled events are printed, so running it again with "
        "--after set to the last id printed continues without a gap or a duplicate."
    )

    def add_arguments(self, parser):
        parser.add_argument("--after", type=int, default=0, help="Print events with a higher id (default 0).")
        parser.add_argument(
            "--limit", type=int, default=None, help="Print at most this many events (default: all)."
        )

    def handle(self, *args, after, limit, **options):
        if not 0 <= after <= MAX_EVENT_ID:
            raise CommandError(f"--after must be a whole number from 0 to {MAX_EVENT_ID}.")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        printed = 0
        while limit is None or printed < limit:
            size = BATCH if limit is None else min(BATCH, limit - printed)
            events = TokenEvent.objects.feed(after=after, limit=size)
            for event in events:
                self.stdout.write(json.dumps(event_json(event), ensure_ascii=False))
            printed += len(events)
            if len(events) < size:
                break
            after = events[-1].pk
