from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tokens.constants import Access
from tokens.management.lifetimes import add_lifetime_arguments, given_expiry, refused
from tokens.models import SitePolicy, Token


class Command(BaseCommand):
    help = (
        "Create a bearer token for a user (e.g. a service account) and print its value once. "
        "The expiry follows the site policy: --days, --hours, --never, or the policy's default lifetime."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("name", help="A name that says where the token is used.")
        parser.add_argument("--purpose", default="")
        add_lifetime_arguments(parser)
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
        given = given_expiry(days=days, hours=hours, never=never)
        expires_at = given["expires_at"] if given else SitePolicy.load().default_expiry()
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
            raise refused(error) from None
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
