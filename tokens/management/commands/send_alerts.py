"""``manage.py send_alerts``: mail owners about their credentials' first use from a new address."""

import math
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connection

from tokens.alerts import send_pending


class Command(BaseCommand):
    help = (
        "Mail owners about the first use of a token or legacy key from a new client address (the "
        '"new address" events the API writes): at most five mails per credential in 24 hours, none for '
        "a muted token, none while the policy switches alerts off. Run it every minute from cron, or "
        "once with --loop as a long-running process. Several copies may run: each event is mailed once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="Keep running, sending every --interval seconds."
        )
        parser.add_argument(
            "--interval", type=float, default=15.0, help="Seconds between rounds with --loop (default 15)."
        )
        parser.add_argument(
            "--rounds", type=int, default=None, help="With --loop: stop after this many rounds (for tests)."
        )

    def handle(self, *args, loop, interval, rounds, **options):
        if math.isnan(interval) or interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        if rounds is not None and rounds < 1:
            raise CommandError("--rounds must be at least 1.")
        if not loop:
            self._round(fail=True)
            return
        done = 0
        while rounds is None or done < rounds:
            # A long-running process: a connection the database dropped must not end it. (Never inside
            # a transaction, which only a test wraps the command in.)
            if not connection.in_atomic_block:
                close_old_connections()
            try:
                self._round(fail=False)
            except DatabaseError as error:
                self.stderr.write(f"Database unavailable ({type(error).__name__}); trying again.")
            done += 1
            if rounds is None or done < rounds:
                time.sleep(interval)

    def _round(self, *, fail):
        report = send_pending()
        counts = sorted(report.outcomes.items())
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts) or "nothing new"
        self.stdout.write(f"New-address alerts: {summary}.")
        if report.failed:
            message = (
                "Could not send to: " + ", ".join(report.failed) + ". Check EMAIL_URL; they will be "
                "tried again on the next run."
            )
            if fail:
                raise CommandError(message)
            self.stderr.write(message)
