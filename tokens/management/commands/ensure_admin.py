"""``manage.py ensure_admin``: a first superuser for a new installation, its password printed once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a first superuser with a random password, printed once, unless a superuser exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(18)
        User.objects.create_superuser(username=options["username"], email="", password=password)
        # Printed once, on the terminal of whoever ran `make run`; it is stored only as an Argon2 hash.
        self.stdout.write(
            self.style.SUCCESS(
                f"Created superuser {options['username']!r} with password: {password}\n"
                "It will not be shown again. Sign in at /admin/ and change it."
            )
        )
