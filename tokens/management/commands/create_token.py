from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tokens.constants import Access
from tokens.models import ExpirationPolicy, Token
from tokens.models.policy import LONGEST_LIFETIME, describe_lifetime


class Command(BaseCommand):
    help = (
        "Create a bearer token for a user (e.g. a service account) and print its value once. "
        "The expiry follows the site policy: --days, --hours, --never, or the policy's default lifetime."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("name", help="A name that says where the token is used.")
        parser.add_argument("--purpose", default="")
        lifetime = parser.add_mutually_exclusive_group()
        lifetime.add_argument("--days", type=int)
        lifetime.add_argument("--hours", type=int)
        lifetime.add_argument(
            "--never", action="store_true", help="No expiry (only where the policy allows it)."
        )
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="GET, HEAD and OPTIONS only (default: the policy's default access).",
        )
        parser.add_argument(
            "--permission",
            action="append",
            dest="permissions",
            metavar="APP.CODENAME",
            help="Narrow the token to this permission of the user; repeat for more (default: all of theirs).",
        )
        parser.add_argument(
            "--allow-ip",
            action="append",
            dest="allowed_ips",
            metavar="ADDRESS_OR_NETWORK",
            help="Accept the token only from this IPv4/IPv6 address or network; repeatable (default: any).",
        )

    def handle(
        self,
        *args,
        username,
        name,
        purpose,
        days,
        hours,
        never,
        read_only,
        permissions,
        allowed_ips,
        **options,
    ):
        try:
            user = get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {username!r} is deactivated; its tokens would not work.")
        if never:
            expires_at = None
        elif days is not None or hours is not None:
            if (days or hours or 0) <= 0:
                raise CommandError("The lifetime must be positive.")
            # Checked before any date arithmetic: --days 9999999 would overflow the year 9999.
            if (days or 0) > LONGEST_LIFETIME.days or (hours or 0) > LONGEST_LIFETIME.days * 24:
                raise CommandError(f"The lifetime can be at most {describe_lifetime(LONGEST_LIFETIME)}.")
            expires_at = timezone.now() + timedelta(days=days or 0, hours=hours or 0)
        else:
            expires_at = ExpirationPolicy.load().default_expiry()
        try:
            token, plaintext = Token.objects.issue(
                user=user,
                name=name,
                purpose=purpose,
                expires_at=expires_at,
                access=Access.READ if read_only else None,
                permissions=permissions,
                allowed_ips=allowed_ips,
            )
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
            ) from None
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        self.stderr.write(f"Created token #{token.pk} {token.name!r} for {username}, expires {expiry}.")
        limits = [token.get_access_display()]
        limits.append(
            "all of the user's permissions"
            if token.permissions is None
            else "permissions: " + (", ".join(token.permissions) or "none")
        )
        limits.append("from: " + (", ".join(token.allowed_ips) or "anywhere"))
        self.stderr.write("; ".join(str(limit) for limit in limits) + ".")
        self.stderr.write("The value follows; it is not stored and will not be shown again.")
        # The value alone on stdout, so it can be piped straight into a secret store.
        self.stdout.write(plaintext)
