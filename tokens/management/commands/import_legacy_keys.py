"""``manage.py import_legacy_keys``: the old system's keys from a CSV file, stored as digests only."""

import csv
import sys

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from tokens import credentials
from tokens.models import LegacyApiKey
from tokens.models.legacy import check_legacy_key_strength, clean_legacy_key

HEADER = ["username", "key"]


class Command(BaseCommand):
    help = (
        "Import legacy API keys from a CSV file with the header row `username,key` (- reads standard "
        "input). Keys are stored as digests only and are never printed. Importing the same file again "
        "imports nothing new. A file with bad rows imports nothing, unless --skip-invalid is given."
    )

    def add_arguments(self, parser):
        parser.add_argument("csv_file", help="Path of the CSV file, or - to read standard input.")
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="Import the good rows and skip the bad ones (reported).",
        )

    def handle(self, *args, csv_file, skip_invalid, **options):
        rows = self._read(csv_file)
        valid, errors, already = self._check(rows)
        for line, message in errors:
            self.stderr.write(f"line {line}: {message}")
        if errors and not skip_invalid:
            raise CommandError(
                f"{len(errors)} bad row(s) in {csv_file}; nothing was imported. "
                "Fix the rows listed above, or pass --skip-invalid to import the good rows only."
            )
        # One transaction: a failure half-way leaves the table as it was.
        try:
            with transaction.atomic():
                imported = sum(
                    LegacyApiKey.objects.import_key(user=user, key=key)[1] for _line, user, key in valid
                )
        except (ValidationError, IntegrityError) as error:
            # Another import ran at the same time; the rollback left the table as it was.
            reason = (
                " ".join(error.messages)
                if isinstance(error, ValidationError)
                else "a key was imported meanwhile."
            )
            raise CommandError(f"Nothing was imported: {reason} Run the import again.") from None
        summary = f"Imported {imported} key(s); {already} already imported"
        if errors:
            summary += f"; skipped {len(errors)} bad row(s)"
        self.stdout.write(summary + ".")
        if not imported:
            self.stdout.write("Nothing new to import.")

    def _read(self, csv_file):
        """Return [(line number, [fields])] after checking the header, or raise CommandError."""
        try:
            # Closed in the finally below (standard input is not ours to close).
            handle = sys.stdin if csv_file == "-" else open(csv_file, newline="", encoding="utf-8-sig")  # noqa: SIM115
        except OSError as error:
            raise CommandError(f"Cannot read {csv_file}: {error.strerror}.") from None
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [column.strip().lower() for column in header] != HEADER:
                raise CommandError(f"{csv_file} must start with the header row: {','.join(HEADER)}")
            return [(reader.line_num, fields) for fields in reader if any(field.strip() for field in fields)]
        except (csv.Error, UnicodeDecodeError) as error:
            raise CommandError(f"{csv_file} is not a readable UTF-8 CSV file: {error}") from None
        finally:
            if handle is not sys.stdin:
                handle.close()

    def _check(self, rows):
        """Return (valid [(line, user, key)], errors [(line, message)], count already imported)."""
        User = get_user_model()
        users = {}
        seen = {}  # digest of a key -> the line it first appeared on; the key itself is not kept
        valid, errors, already = [], [], 0
        for line, fields in rows:
            if len(fields) != 2:
                errors.append((line, f"expected 2 columns (username,key), found {len(fields)}"))
                continue
            username, key = fields[0].strip(), fields[1]
            if not username:
                errors.append((line, "empty username"))
                continue
            if not key.strip():
                errors.append((line, "empty key"))
                continue
            # The rule import_key applies, checked here so that a bad row is reported before any write.
            try:
                clean_legacy_key(key)
                check_legacy_key_strength(key)
            except ValidationError as error:
                errors.append((line, " ".join(error.messages)))
                continue
            if username not in users:
                users[username] = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
            user = users[username]
            if user is None:
                errors.append((line, f"unknown user {username!r}"))
                continue
            fingerprint = credentials.digest(key, credentials.peppers()[0])
            if fingerprint in seen:
                errors.append((line, f"duplicate key: the same key as line {seen[fingerprint]}"))
                continue
            seen[fingerprint] = line
            existing = LegacyApiKey.objects.find(key)
            if existing is not None and existing.user_id != user.pk:
                errors.append((line, "this key is already imported for another user"))
                continue
            if existing is not None:
                already += 1
                continue
            valid.append((line, user, key))
        return valid, errors, already
