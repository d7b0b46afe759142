"""``manage.py backup PATH``: a consistent copy of the SQLite database, taken while the portal serves."""

import os
import sqlite3
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import connection


class Command(BaseCommand):
    help = (
        "Write a consistent copy of the SQLite database to PATH (readable by this account only), safe "
        "while the portal serves: SQLite's online backup reads one snapshot and writers go on meanwhile. "
        "PostgreSQL databases are backed up with pg_dump (docs/operations.md). A restore also needs the "
        "same TOKEN_PEPPERS: without them no token or key in the copy works."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="Where to write the copy; must not exist yet.")

    def handle(self, *args, path, **options):
        if connection.vendor != "sqlite":
            raise CommandError(
                "This database is PostgreSQL: back it up with pg_dump, e.g. "
                'pg_dump --format=custom --file=portal.dump "$DATABASE_URL" (see docs/operations.md).'
            )
        target = Path(path).resolve()
        source = Path(connection.settings_dict["NAME"]).resolve()
        if target == source:
            raise CommandError("PATH is the database itself: name a new file.")
        # Created here, exclusively and 0600, before SQLite writes a page into it: the copy holds digests
        # and session keys, and is never readable by anyone else, not even for a moment.
        try:
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CommandError(f"{target} exists already: name a new file.") from None
        except OSError as error:
            raise CommandError(f"{target} cannot be created: {error.strerror}.") from None
        os.close(descriptor)
        try:
            pages = self._copy(source, target)
        except sqlite3.Error as error:
            target.unlink(missing_ok=True)
            raise CommandError(f"The backup failed and was removed: {error}.") from None
        self.stdout.write(f"Backed up {pages} page(s) of {source} to {target}; integrity check: ok.")

    @staticmethod
    def _copy(source, target):
        """Copy *source* into *target* in one step (one snapshot), check the copy; return its pages."""
        # timeout: wait for a writer's checkpoint rather than fail at once.
        with sqlite3.connect(source, timeout=20) as reader, sqlite3.connect(target) as copy:
            # pages=-1: every page in one step, under one read transaction. In WAL mode writers are not
            # held up, and the copy is the database as of one moment: never half of a transaction.
            reader.backup(copy, pages=-1)
            # The copy stands alone: no -wal file beside it is needed to read it.
            copy.execute("PRAGMA journal_mode=DELETE")
            result = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                raise sqlite3.DatabaseError(f"integrity check of the copy: {result}")
            pages = copy.execute("PRAGMA page_count").fetchone()[0]
        reader.close()
        copy.close()
        return pages
