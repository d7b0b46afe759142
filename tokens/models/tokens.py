"""Bearer tokens: ``Token.objects.issue()``, the only way a token is made, and everything done to one.

The token's rules live here once: name and purpose cleaning, status, rename, revoke, shorten, rotate,
restrictions, alerts, expiry notices and moving a token to a service account. ``lock_owner`` makes one
owner's writes take turns (docs/security.md, "Lock order"). The pages, the API, the admin and the
commands all call these methods.
"""

import dataclasses
import logging
import unicodedata
from datetime import UTC, timedelta
from itertools import groupby

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import credentials
from ..constants import (
    DIGEST_LENGTH,
    LAST_CHARACTERS_LENGTH,
    NAME_MAX_LENGTH,
    PUBLIC_ID_LENGTH,
    PURPOSE_MAX_LENGTH,
    SELF_ROTATION_MAILS_PER_HOUR,
    Access,
)
from ..notifications import absolute_url, mail_each, mail_owner
from .base import Credential
from .events import TokenEvent
from .policy import SitePolicy
from .restrictions import (
    UNCHANGED,
    ExceedsCaller,
    Limits,
    check_grant,
    clean_access,
    clean_allowed_ips,
    clean_permissions,
    describe_change,
    owner_permissions,
)
from .service_accounts import ServiceAccount, notice_recipients
from .usage import UsageRecord

log = logging.getLogger(__name__)


# Unicode categories no name needs and that let one text pass for another in the admin, the Activity
# Stream and e-mails: controls (Cc: NUL, DEL, C1 such as the terminal escape U+009B), format characters
# (Cf: bidirectional overrides such as U+202E, zero-width spaces and joiners), line and paragraph
# separators (Zl, Zp), lone surrogates (Cs: not text at all, no database can store them), private-use
# (Co) and unassigned (Cn) code points, which show as nothing or as anything.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def refused_character(text, *, allowed=""):
    """Return the first character of *text* a name or purpose may not hold (unless *allowed*), or None."""
    for character in text:
        if character not in allowed and unicodedata.category(character) in REFUSED_CATEGORIES:
            return character
    return None


def _refuse_invisible(field, text, *, allowed=""):
    character = refused_character(text, allowed=allowed)
    if character is not None:
        raise ValidationError(
            {
                field: _(
                    "This cannot contain control characters or invisible formatting characters "
                    "(found U+%(code)04X%(what)s)."
                )
                % {"code": ord(character), "what": f" {unicodedata.name(character, '')}".rstrip()}
            }
        )


def clean_name(name):
    """Return *name* trimmed, or raise ValidationError({"name": …})."""
    if not isinstance(name, str):
        raise ValidationError({"name": _("Enter a name.")})
    name = name.strip()
    if not name:
        raise ValidationError({"name": _("Enter a name.")})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError({"name": _("Use at most %(n)d characters.") % {"n": NAME_MAX_LENGTH}})
    _refuse_invisible("name", name)
    return name


def clean_purpose(purpose):
    """Return *purpose* trimmed ("" for None), or raise ValidationError({"purpose": …})."""
    if purpose is None:
        return ""
    if not isinstance(purpose, str):
        raise ValidationError({"purpose": _("Enter text.")})
    purpose = purpose.strip()
    if len(purpose) > PURPOSE_MAX_LENGTH:
        raise ValidationError({"purpose": _("Use at most %(n)d characters.") % {"n": PURPOSE_MAX_LENGTH}})
    # A note of several lines: line breaks and tabs are what a textarea sends.
    _refuse_invisible("purpose", purpose, allowed="\n\r\t")
    return purpose


def lock_owner(user_id):
    """Lock the owner's row for the rest of the transaction: one owner's token writes take turns.

    FOR NO KEY UPDATE, not FOR UPDATE: every INSERT that points at the owner (a token, an event, a
    legacy key) takes FOR KEY SHARE on this row for its foreign key, among them the "first used" event
    a request writes after marking its token's row; with FOR UPDATE that request and an owner's write
    could wait for each other (docs/security.md, "Lock order").
    """
    get_user_model().objects.select_for_update(no_key=True).filter(pk=user_id).first()


class TokenStatus(models.TextChoices):
    """A token's derived status: the one list the querysets, pages, API, admin and badge use."""

    ACTIVE = "active", _("Active")
    # Rotated: a replacement exists, and this value still works until its rotation_ends_at.
    ROTATING = "rotating", _("Rotating")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


class TokenQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)

    def manageable_by(self, user):
        """Return the tokens *user* manages on the site: their own and their service accounts'."""
        accounts = ServiceAccount.objects.managed_by(user)
        return self.filter(Q(user=user) | Q(user__service_account__in=accounts))

    @staticmethod
    def status_condition(status, now=None):
        """Return the Q that selects tokens with the derived *status* (a TokenStatus value)."""
        now = now or timezone.now()
        # A rotation past its overlap end is a revocation that took effect by itself: no job has to run
        # for the old value to stop, and every status reads it the same way as the lookup in auth.py.
        live = Q(revoked_at__isnull=True) & (Q(rotation_ends_at__isnull=True) | Q(rotation_ends_at__gt=now))
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        return {
            TokenStatus.ACTIVE: live & unexpired & Q(rotation_ends_at__isnull=True),
            TokenStatus.ROTATING: live & unexpired & Q(rotation_ends_at__isnull=False),
            TokenStatus.EXPIRED: live & Q(expires_at__lte=now),
            TokenStatus.REVOKED: Q(revoked_at__isnull=False) | Q(rotation_ends_at__lte=now),
        }[status]

    def with_status(self, status, now=None):
        return self.filter(self.status_condition(status, now))

    def active(self, now=None):
        return self.with_status(TokenStatus.ACTIVE, now)

    def expired(self, now=None):
        return self.with_status(TokenStatus.EXPIRED, now)

    def revoked(self):
        return self.with_status(TokenStatus.REVOKED)

    def rotating(self, now=None):
        return self.with_status(TokenStatus.ROTATING, now)

    def counted_for_cap(self, now=None):
        """Return the tokens the active-token cap counts: a token and its predecessor in overlap once.

        Every live value counts, rotating ones too, except a rotating token whose replacement is
        active: the two are one token being replaced, and counting both would refuse the rotation
        that the cap is meant to allow.
        """
        now = now or timezone.now()
        # One probe of the unique index on replaces per rotating token.
        active_replacement = self.model.objects.active(now).filter(replaces=OuterRef("pk"))
        return self.filter(
            self.status_condition(TokenStatus.ACTIVE, now)
            | (self.status_condition(TokenStatus.ROTATING, now) & ~Exists(active_replacement))
        )

    def live(self, now=None):
        """Return the tokens whose value works now: active, or rotating within their overlap."""
        now = now or timezone.now()
        return self.filter(
            self.status_condition(TokenStatus.ACTIVE, now) | self.status_condition(TokenStatus.ROTATING, now)
        )

    def made_with(self, token):
        """Return every token made with *token*'s value: by it, by one made by it, and so on.

        A token makes another when it rotates itself, or creates or rotates a token where the policy
        lets tokens manage tokens (``made_with``). Whoever held the value could hold what it made.
        Only ids are read, one query per generation.
        """
        found, generation = [], [token.pk]
        while generation:
            made = self.filter(made_with__in=generation).values_list("pk", flat=True)
            generation = [pk for pk in made if pk not in found]
            found.extend(generation)
        return self.filter(pk__in=found)

    def check_name_free(self, *, user_id, name, exclude_pk=None, now=None):
        """Raise ValidationError({"name": …}) if *user_id* has another active token called *name*.

        Callers hold the owner's row lock (see ``lock_owner``), so two writers cannot both pass.
        """
        taken = self.for_user(user_id).active(now).filter(name=name)
        if exclude_pk is not None:
            taken = taken.exclude(pk=exclude_pk)
        if taken.exists():
            raise ValidationError({"name": _("An active token of this owner already has this name.")})

    def record_expiries(self, now=None):
        """Write an "expired" event for each expired token here that has none yet (idempotent)."""
        pending = self.expired(now).exclude(events__kind=TokenEvent.Kind.EXPIRED)
        TokenEvent.objects.bulk_create(
            [
                TokenEvent(token_id=pk, user_id=user_id, kind=TokenEvent.Kind.EXPIRED, at=expires_at)
                for pk, user_id, expires_at in pending.values_list("pk", "user_id", "expires_at")
            ],
            ignore_conflicts=True,
        )

    def mark_first_use(self, pk, *, at, ip=None):
        """Set the last use of never-used token *pk* to *at* from *ip*; return True if this was its first use.

        The one write the request path makes to a token row, once in the token's life (the summariser
        keeps the last use current afterwards). The address too, so the new-address check is free for
        the requests that follow from it before the summariser runs. Only the token's row is locked
        (docs/security.md, "Lock order", step 2).
        """
        return bool(self.filter(pk=pk, last_used_at__isnull=True).update(last_used_at=at, last_used_ip=ip))

    def _notice_pending(self, window):
        # Not yet mailed in the current window. A notice sent before the window opened belongs to an
        # earlier expiry that has since been extended, so it does not count.
        return Q(expiry_notified_at__isnull=True) | Q(expiry_notified_at__lt=F("expires_at") - window)

    def due_for_expiry_notice(self, window, now=None):
        """Return active tokens of active owners that expire within *window* and were not mailed for it."""
        now = now or timezone.now()
        return (
            self.active(now)
            .filter(expires_at__lte=now + window, user__is_active=True)
            .filter(self._notice_pending(window))
        )

    def claim_expiry_notice(self, ids, window, now):
        """Mark tokens *ids* as mailed at *now*; return the ids this call marked.

        A concurrent run gets the rest.

        Token rows only, no owner row (docs/security.md, "Lock order").
        """
        self.filter(pk__in=ids).filter(self._notice_pending(window)).update(expiry_notified_at=now)
        return set(self.filter(pk__in=ids, expiry_notified_at=now).values_list("pk", flat=True))

    def exceeding(self, maximum, now=None):
        """Return active tokens that live longer than *maximum* from now (or never expire)."""
        now = now or timezone.now()
        return self.active(now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now + maximum))


class AlreadyIssued(Exception):
    """The create form with this nonce was submitted before; ``token`` is what it created."""

    def __init__(self, token):
        super().__init__("already issued")
        self.token = token


class NotRotatable(Exception):
    """Only an active token can be rotated; ``status`` is the TokenStatus this one has."""

    def __init__(self, status):
        super().__init__(f"not rotatable: {status}")
        self.status = status


class TokenManager(models.Manager.from_queryset(TokenQuerySet)):
    def check_issue(
        self,
        *,
        user,
        name,
        purpose="",
        expires_at,
        access=None,
        permissions=None,
        allowed_ips=None,
        policy=None,
        now=None,
        caller=None,
        replaces=None,
    ):
        """Apply every rule of ``issue`` and return ``(name, purpose, access, permissions, allowed_ips)``.

        Raise ValidationError with field errors otherwise, ExceedsCaller when *caller* (the credential
        making the request) would grant more than it holds. ``issue`` calls it under the owner's lock;
        a form may call it first to show the errors next to its fields (the admin's add form does).
        """
        now = now or timezone.now()
        name = clean_name(name)
        purpose = clean_purpose(purpose)
        policy = policy or SitePolicy.load()
        policy.check_expiry(user, expires_at, now)
        self.check_name_free(user_id=user.pk, name=name, now=now)
        access, permissions, allowed_ips = _clean_restrictions(
            user=user,
            access=policy.default_access if access is None else access,
            permissions=permissions,
            allowed_ips=allowed_ips,
        )
        check_grant(caller, access=access, permissions=permissions, allowed_ips=allowed_ips)
        policy.check_allowed_ips(expires_at, allowed_ips, user)
        # The token a rotation replaces and its replacement count as one: the old one is left out here.
        held = self.for_user(user).counted_for_cap(now).exclude(pk=getattr(replaces, "pk", None))
        if policy.max_active_tokens is not None and held.count() >= policy.max_active_tokens:
            raise ValidationError(
                {
                    "__all__": _(
                        "You have reached the limit of %(n)d active tokens. "
                        "Revoke one you no longer need first."
                    )
                    % {"n": policy.max_active_tokens}
                }
            )
        return name, purpose, access, permissions, allowed_ips

    def issue(
        self,
        *,
        user,
        name,
        purpose="",
        expires_at,
        actor=None,
        ip=None,
        policy=None,
        now=None,
        nonce=None,
        access=None,
        permissions=None,
        allowed_ips=None,
        replaces=None,
        caller=None,
    ):
        """Create a token for *user* under the site policy and return ``(token, plaintext)``.

        The plaintext exists only in the return value: only its keyed digest is stored.
        Raise ValidationError with field errors when the name, purpose, expiry, access, permissions or
        allowed addresses are not allowed. *access* None takes the policy's default; *permissions*
        None inherits all of the owner's; *allowed_ips* None or ``[]`` allows any address.
        With a one-time *nonce* (from the create form), a second call with the same nonce creates
        nothing and raises AlreadyIssued with the first token: a resubmitted form never makes two.
        *replaces* is the token a rotation replaces (``Token.rotate`` passes it, holding its row).
        *caller* is the credential making the request (``request.auth``; None for a person): the new
        token must lie within its limits (ExceedsCaller otherwise), and a bearer token is remembered
        as the one the new token was made with, so a leak report of it reaches the new token too.
        """
        now = now or timezone.now()
        with transaction.atomic():
            # Concurrent creates for one user queue here, so the name check and the active-token limit
            # cannot both pass for two requests at once.
            lock_owner(user.pk)
            if nonce is not None:
                earlier = self.filter(user=user, creation_nonce=nonce).first()
                if earlier is not None:
                    raise AlreadyIssued(earlier)
            name, purpose, access, permissions, allowed_ips = self.check_issue(
                user=user,
                name=name,
                purpose=purpose,
                expires_at=expires_at,
                access=access,
                permissions=permissions,
                allowed_ips=allowed_ips,
                policy=policy,
                now=now,
                caller=caller,
                replaces=replaces,
            )
            plaintext, parsed = credentials.generate()
            token = self.create(
                user=user,
                name=name,
                purpose=purpose,
                created_at=now,
                expires_at=expires_at,
                public_id=parsed.public_id,
                pepper_id=parsed.pepper_id,
                digest=parsed.digest,
                last_characters=credentials.last_characters(plaintext),
                creation_nonce=nonce,
                access=access,
                permissions=permissions,
                allowed_ips=allowed_ips,
                replaces=replaces,
                made_with_id=caller.token_id if caller is not None else None,
            )
            TokenEvent.objects.create(
                user=user,
                token=token,
                kind=TokenEvent.Kind.CREATED,
                actor=actor or user,
                at=now,
                ip=ip,
                detail=name,
            )
        return token, plaintext

    def find_by_value(self, value):
        """Return the token whose plaintext is *value*, or None (for incident response)."""
        try:
            parsed = credentials.parse(value.strip())
        except credentials.MalformedToken:
            return None
        token = self.filter(public_id=parsed.public_id).select_related("user").first()
        if token and credentials.matches(parsed, token.digest, token.pepper_id):
            return token
        return None

    def notify_expiring(self, *, now=None, dry_run=False):
        """Mail each owner once about their active tokens expiring within the notice window; return a report.

        One mail per owner (per manager, for a service account) lists every such token with its expiry,
        its page and its rotate page, never a value. Each token is claimed before the mail goes out and
        given back if sending fails, so a concurrent run mails nothing twice and the next run tries the
        owner again. Also writes the "expired" events of the tokens that have expired. *dry_run* mails,
        claims and writes nothing; the report then names who would be mailed.
        """
        now = now or timezone.now()
        if not dry_run:
            self.record_expiries(now=now)
        window = timedelta(days=SitePolicy.load().expiry_notice_days)
        due = (
            self.due_for_expiry_notice(window, now)
            .select_related("user")
            .order_by("user_id", "expires_at", "pk")
        )
        report = ExpiryNoticeReport()
        for user, tokens in groupby(due, key=lambda token: token.user):
            tokens = list(tokens)
            # A service account's notice goes to each of its managers instead (one mail each).
            recipients = notice_recipients(user)
            if not recipients:
                report.without_email.append(user.get_username())
                continue
            if dry_run:
                report.would_mail.append((user.get_username(), len(tokens)))
                continue
            claimed_ids = self.claim_expiry_notice([t.pk for t in tokens], window, now)
            claimed = [token for token in tokens if token.pk in claimed_ids]
            if not claimed:
                continue  # another run is mailing this owner right now
            try:
                mail_each(recipients, "expiring_tokens", _expiry_notice_context(claimed), owner=user)
            except Exception as error:
                # Unmark, so the next run tries again.
                self.filter(pk__in=[t.pk for t in claimed], expiry_notified_at=now).update(
                    expiry_notified_at=None
                )
                report.failed.append(f"{user.get_username()} ({type(error).__name__})")
                continue
            report.owners += 1
            report.tokens += len(claimed)
        return report


@dataclasses.dataclass
class ExpiryNoticeReport:
    """What one run of ``notify_expiring`` did: owners and tokens mailed, owners skipped or failed."""

    owners: int = 0
    tokens: int = 0
    would_mail: list = dataclasses.field(default_factory=list)  # (username, token count) on a dry run
    without_email: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)


def _expiry_notice_context(tokens):
    # Each token's own page and its rotate page; the value is nowhere in the mail.
    return {
        "tokens": [
            {
                "name": t.name,
                "expires_at": t.expires_at,
                "url": absolute_url("tokens:detail", t.pk),
                "rotate_url": absolute_url("tokens:rotate", t.pk),
            }
            for t in tokens
        ],
        "list_url": absolute_url("tokens:list"),
    }


def _clean_restrictions(*, user, access=UNCHANGED, permissions=UNCHANGED, allowed_ips=UNCHANGED):
    """Clean the given restrictions together; raise one ValidationError naming every bad field."""
    cleaned, errors = [], {}
    for _field, value, clean in (
        ("access", access, clean_access),
        ("permissions", permissions, lambda v: clean_permissions(user, v)),
        ("allowed_ips", allowed_ips, clean_allowed_ips),
    ):
        if value is UNCHANGED:
            cleaned.append(UNCHANGED)
            continue
        try:
            cleaned.append(clean(value))
        except ValidationError as error:
            errors.update(error.message_dict)
            cleaned.append(None)
    if errors:
        raise ValidationError(errors)
    return cleaned


class Token(Credential):
    """A named bearer token. The value itself is never stored: see ``credentials``."""

    event_field = "token"

    AlreadyIssued = AlreadyIssued
    NotRotatable = NotRotatable
    ExceedsCaller = ExceedsCaller

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="api_tokens",
    )
    name = models.CharField(
        verbose_name=_("name"),
        max_length=NAME_MAX_LENGTH,
    )
    purpose = models.TextField(
        verbose_name=_("purpose"),
        max_length=PURPOSE_MAX_LENGTH,
        blank=True,
    )
    public_id = models.CharField(
        verbose_name=_("public id"),
        max_length=PUBLIC_ID_LENGTH,
        unique=True,
        editable=False,
    )
    digest = models.CharField(
        verbose_name=_("digest"),
        max_length=DIGEST_LENGTH,
        editable=False,
    )
    last_characters = models.CharField(
        verbose_name=_("last characters"),
        max_length=LAST_CHARACTERS_LENGTH,
        editable=False,
    )
    created_at = models.DateTimeField(
        verbose_name=_("created at"),
        default=timezone.now,
        editable=False,
    )
    expires_at = models.DateTimeField(
        verbose_name=_("expires at"),
        null=True,
        blank=True,
        help_text=_("Empty: the token never expires."),
    )
    creation_nonce = models.CharField(
        verbose_name=_("creation nonce"),
        max_length=64,
        null=True,
        blank=True,
        editable=False,
        help_text=_("The one-time value of the form that created the token; makes resubmission harmless."),
    )
    expiry_notified_at = models.DateTimeField(
        verbose_name=_("expiry notice sent at"),
        null=True,
        blank=True,
        editable=False,
    )
    # Least privilege. Read from the one lookup row on every request (see auth.py); changed only
    # through issue() and set_restrictions(), which check them against the owner and the policy.
    access = models.CharField(
        verbose_name=_("access"),
        max_length=10,
        choices=Access.choices,
        default=Access.READ_WRITE,
        help_text=_("Read only: GET, HEAD and OPTIONS; anything else is refused."),
    )
    permissions = models.JSONField(
        verbose_name=_("permissions"),
        null=True,
        blank=True,
        default=None,
        help_text=_(
            "Empty: all of the owner's permissions. Otherwise a list of “app_label.codename”; the token "
            "has those the owner still holds at each request."
        ),
    )
    allowed_ips = models.JSONField(
        verbose_name=_("allowed client addresses"),
        default=list,
        blank=True,
        help_text=_("IPv4/IPv6 addresses or networks the token may be used from; empty: anywhere."),
    )
    alerts = models.BooleanField(
        verbose_name=_("new-address alerts"),
        default=True,
        help_text=_("Mail the owner when the token is used from an address it was never used from."),
    )
    # An alert is owed for a use made before the mute: the sender compares the use's time with this.
    alerts_muted_at = models.DateTimeField(
        verbose_name=_("alerts muted at"),
        null=True,
        blank=True,
        editable=False,
    )

    # Rotation. The new token points at the one it replaces (one-to-one: one old token can never have
    # two replacements, whatever runs in parallel); the old token holds when it was rotated and when
    # its value stops, both read by the one lookup of auth.py.
    replaces = models.OneToOneField(
        "self",
        verbose_name=_("replaces"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="replaced_by",
    )
    rotated_at = models.DateTimeField(
        verbose_name=_("rotated at"),
        null=True,
        blank=True,
        editable=False,
    )
    rotation_ends_at = models.DateTimeField(
        verbose_name=_("old value works until"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("After a rotation: the end of the overlap, when this value stops working."),
    )
    # The bearer token whose value made this one (rotating itself, or creating or rotating a token
    # where the policy lets tokens manage tokens); None when a person made it. A leak report of that
    # value revokes this token too (``revoke_reported_leaked``).
    made_with = models.ForeignKey(
        "self",
        verbose_name=_("made with token"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )

    objects = TokenManager()

    class Meta:
        verbose_name = _("token")
        verbose_name_plural = _("tokens")
        ordering = ("-created_at", "-id")
        # RFC 7662: a resource server's token may ask whether other tokens are active (api/introspect.py).
        permissions = (("introspect_token", _("Can introspect tokens")),)
        indexes = [
            models.Index(fields=["user", "-created_at"], name="token_user_created"),
            models.Index(fields=["expires_at"], name="token_expires"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="token_name_not_empty"),
            models.UniqueConstraint(fields=["user", "creation_nonce"], name="token_creation_nonce_once"),
            models.CheckConstraint(condition=Q(access__in=Access.values), name="token_access_known"),
            models.CheckConstraint(
                condition=Q(rotated_at__isnull=True, rotation_ends_at__isnull=True)
                | Q(rotated_at__isnull=False, rotation_ends_at__gte=F("rotated_at")),
                name="token_rotation_ends_after_start",
            ),
        ]

    def __str__(self):
        # Never the value or the digest: only what the owner chose to call it.
        return self.name

    @property
    def status(self):
        return self.status_at(timezone.now())

    def status_at(self, now):
        """Return the TokenStatus at *now*, by the same rules as ``TokenQuerySet.status_condition``."""
        rotation_over = self.rotation_ends_at is not None and self.rotation_ends_at <= now
        if self.revoked_at is not None or rotation_over:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenStatus.EXPIRED
        if self.rotation_ends_at is not None:
            return TokenStatus.ROTATING
        return TokenStatus.ACTIVE

    @property
    def ended_at(self):
        """Return when the value stopped by revocation or by the end of its rotation's overlap, or None."""
        if self.revoked_at is not None:
            return self.revoked_at
        if self.rotation_ends_at is not None and self.rotation_ends_at <= timezone.now():
            return self.rotation_ends_at
        return None

    @property
    def replaced_by_token(self):
        """Return the token that replaced this one, or None (one query unless select_related)."""
        return getattr(self, "replaced_by", None)

    @property
    def is_active(self):
        return self.status == TokenStatus.ACTIVE

    @property
    def is_restricted(self):
        """Return whether the token can do less than its owner (read only, narrowed or address-bound)."""
        return self.access == Access.READ or self.permissions is not None or bool(self.allowed_ips)

    def set_restrictions(
        self,
        *,
        access=UNCHANGED,
        permissions=UNCHANGED,
        allowed_ips=UNCHANGED,
        actor,
        ip=None,
        policy=None,
        caller=None,
    ):
        """Change the access, permissions or allowed addresses; record one event per changed field.

        A field left out keeps its value. Every given value is checked first against the owner's
        permissions now and the policy, and against the limits of *caller*, the credential making the
        request (``request.auth``; None for a person), unless it only narrows this token: on any error
        nothing changes (ValidationError, ExceedsCaller). Return the changed field names.
        """
        access, permissions, allowed_ips = _clean_restrictions(
            user=self.user, access=access, permissions=permissions, allowed_ips=allowed_ips
        )
        kinds = {
            "access": TokenEvent.Kind.ACCESS_CHANGED,
            "permissions": TokenEvent.Kind.PERMISSIONS_CHANGED,
            "allowed_ips": TokenEvent.Kind.ADDRESSES_CHANGED,
        }
        with transaction.atomic():
            # The row as it is now, locked: the events' "old → new" must describe the real change.
            # NO KEY: event INSERTs (a request's "first used" too) and the summariser's day and address
            # rows check their foreign key on this row with FOR KEY SHARE, and must not wait for it.
            current = (
                Token.objects.select_for_update(no_key=True)
                .filter(pk=self.pk)
                .values("access", "permissions", "allowed_ips", "expires_at")
                .get()
            )
            given = {"access": access, "permissions": permissions, "allowed_ips": allowed_ips}
            new = {
                field: value
                for field, value in given.items()
                if value is not UNCHANGED and value != current[field]
            }
            check_grant(
                caller,
                current=Limits(current["access"], current["permissions"], tuple(current["allowed_ips"])),
                **new,
            )
            if "allowed_ips" in new:
                policy = policy or SitePolicy.load()
                policy.check_allowed_ips(current["expires_at"], new["allowed_ips"], self.user)
            if not new:
                return []
            Token.objects.filter(pk=self.pk).update(**new)
            now = timezone.now()
            TokenEvent.objects.bulk_create(
                [
                    TokenEvent(
                        user_id=self.user_id,
                        token=self,
                        kind=kinds[field],
                        actor=actor,
                        ip=ip,
                        at=now,
                        detail=describe_change(field, current[field], value),
                    )
                    for field, value in new.items()
                ]
            )
        for field, value in new.items():
            setattr(self, field, value)
        return list(new)

    def rename(self, name, *, actor, ip=None):
        """Change the name (the value never changes) and record the event."""
        name = clean_name(name)
        if name == self.name:
            return
        with transaction.atomic():
            lock_owner(self.user_id)
            Token.objects.check_name_free(user_id=self.user_id, name=name, exclude_pk=self.pk)
            old = self.name
            Token.objects.filter(pk=self.pk).update(name=name)
            self.name = name
            TokenEvent.objects.create(
                user_id=self.user_id,
                token=self,
                kind=TokenEvent.Kind.RENAMED,
                actor=actor,
                ip=ip,
                detail=f"{old} → {name}",
            )

    def revoke(self, *, actor, ip=None, detail=""):
        """Revoke the token from the very next request on. A second revoke changes nothing.

        A rotating token is revoked too: its overlap ends at once. One whose overlap is over is
        revoked already (by its rotation) and stays as it is. The token this one replaced stops too if
        it is still in its overlap: a lineage never outlives its newest value.
        """
        with transaction.atomic():
            # The predecessor's row before this one's: credential rows in id order (docs/security.md,
            # "Lock order"), as the summariser takes them.
            self._end_predecessor_overlap(
                timezone.now(), actor=actor, ip=ip, detail=_("overlap ended: its replacement was revoked")
            )
            return self._revoke(actor=actor, kind=TokenEvent.Kind.REVOKED, ip=ip, detail=detail)

    def _end_predecessor_overlap(self, now, *, actor, ip, detail):
        """End the overlap of the token this one replaced, if it is still running; record it."""
        if self.replaces_id is None:
            return False
        ended = Token.objects.filter(
            pk=self.replaces_id, revoked_at__isnull=True, rotated_at__lte=now, rotation_ends_at__gt=now
        ).update(rotation_ends_at=now)
        if ended:
            TokenEvent.objects.create(
                user_id=self.user_id,
                token_id=self.replaces_id,
                kind=TokenEvent.Kind.REVOKED,
                actor=actor,
                ip=ip,
                at=now,
                detail=str(detail),
            )
        return bool(ended)

    def revoke_reported_leaked(self, *, ip=None, detail=""):
        """Revoke this token, reported leaked, and every live token made with its value.

        Return ``(was_live, made)``: whether this value still worked (active, or rotating within its
        overlap: a value in its overlap is as leaked as any), and the tokens made with it that this
        revoked. Those are revoked whether or not this value still works: a thief who rotated the
        leaked value first holds only the replacement.
        """
        was_live = self.status in (TokenStatus.ACTIVE, TokenStatus.ROTATING)
        if was_live:
            self.revoke(actor=None, ip=ip, detail=detail)
        made = []
        for token in Token.objects.made_with(self).live().order_by("pk"):
            because = _("reported leaked: made with token #%(id)s, reported leaked") % {"id": self.pk}
            if token.revoke(actor=None, ip=ip, detail=f"{because} · {detail}"[:255]):
                made.append(token)
        return was_live, made

    def alerts_muted_for(self, moment):
        """Return whether an alert about a use at *moment* is muted: only a use after the mute is.

        An alert owed for an earlier use is still sent, however soon after it the mute came.
        """
        if self.alerts:
            return False
        return self.alerts_muted_at is None or self.alerts_muted_at < moment

    def set_alerts(self, enabled, *, actor, ip=None, caller=None):
        """Switch new-address alerts on or off for this token and record the change.

        Only a person may mute them: *caller*, a credential making the request (``request.auth``),
        may switch them on but not off (ExceedsCaller), or a thief would silence the alert about
        their own first use.
        """
        enabled = bool(enabled)
        if caller is not None and not enabled:
            raise ExceedsCaller(
                _("Only the owner, signed in on the site, can mute new-address alerts; a token cannot.")
            )
        muted_at = None if enabled else timezone.now()
        # One row lock, the token's own (docs/security.md, "Lock order").
        with transaction.atomic():
            changed = (
                Token.objects.filter(pk=self.pk)
                .exclude(alerts=enabled)
                .update(alerts=enabled, alerts_muted_at=muted_at)
            )
            if changed:
                TokenEvent.objects.create(
                    user_id=self.user_id,
                    token=self,
                    kind=TokenEvent.Kind.ALERTS_CHANGED,
                    actor=actor,
                    ip=ip,
                    detail="on" if enabled else "off",
                )
        self.alerts = enabled
        if changed:
            self.alerts_muted_at = muted_at
        return bool(changed)

    def change_purpose(self, purpose, *, actor, ip=None):
        """Change the purpose (a note) and record the event."""
        purpose = clean_purpose(purpose)
        if purpose == self.purpose:
            return False
        with transaction.atomic():
            Token.objects.filter(pk=self.pk).update(purpose=purpose)
            TokenEvent.objects.create(
                user_id=self.user_id,
                token=self,
                kind=TokenEvent.Kind.PURPOSE_CHANGED,
                actor=actor,
                ip=ip,
                detail=purpose[:255],
            )
        self.purpose = purpose
        return True

    @classmethod
    def revocable(cls, now):
        return super().revocable(now) & (Q(rotation_ends_at__isnull=True) | Q(rotation_ends_at__gt=now))

    def rotate(
        self, *, overlap, expires_at=UNCHANGED, actor, ip=None, nonce=None, policy=None, now=None, caller=None
    ):
        """Replace the value: issue a token with the same settings; this one works *overlap* longer.

        Return ``(new_token, plaintext)``. The new token keeps the name, purpose, access, permissions
        (those the owner still holds) and allowed addresses; its expiry is *expires_at* if given (None:
        no expiry, where allowed), else this token's lifetime from now within the policy. This token
        is ``rotating`` until ``rotation_ends_at`` (now + *overlap*, never past its own expiry) and
        revoked from then on. A lineage has at most two live values: if the token this one replaced is
        still in its overlap, that overlap ends now. Raise NotRotatable unless it is active,
        AlreadyIssued for a *nonce* already used, ValidationError for a refused overlap or expiry,
        ExceedsCaller when *caller* (the credential making the request; None for a person) holds less
        than the new token would; on any error nothing changes.
        """
        now = now or timezone.now()
        policy = policy or SitePolicy.load()
        policy.check_overlap(overlap)
        user = self.user
        with transaction.atomic():
            # Lock order (docs/security.md): the owner first, as issue() does, then this token's row.
            lock_owner(user.pk)
            if nonce is not None:
                earlier = Token.objects.filter(user_id=user.pk, creation_nonce=nonce).first()
                if earlier is not None:
                    raise AlreadyIssued(earlier)
            # The row as it is now, locked: of two rotations at once, the second finds it rotating.
            # NO KEY: event INSERTs (a request's "first used" too) and the summariser's day and address
            # rows check their foreign key on this row with FOR KEY SHARE, and must not wait for it.
            # With it the predecessor's row, whose overlap this rotation ends: both in id order, the
            # predecessor first, as the summariser and revoke() take them.
            rows = {
                row.pk: row
                for row in Token.objects.select_for_update(no_key=True)
                .filter(pk__in=[pk for pk in (self.pk, self.replaces_id) if pk is not None])
                .order_by("pk")
            }
            old = rows[self.pk]
            status = old.status_at(now)
            if status != TokenStatus.ACTIVE:
                raise NotRotatable(status)
            if expires_at is UNCHANGED:
                lifetime = None if old.expires_at is None else old.expires_at - old.created_at
                expires_at = policy.rotation_expiry(user, lifetime, now)
            ends_at = now + overlap
            if old.expires_at is not None:
                ends_at = min(ends_at, old.expires_at)
            old._end_predecessor_overlap(
                now, actor=actor, ip=ip, detail=_("overlap ended: its replacement was rotated again")
            )
            # Rotating before issuing: the old token no longer counts as active, so the name is free for
            # its replacement (issue() counts the two as one against the active-token cap).
            Token.objects.filter(pk=old.pk).update(rotated_at=now, rotation_ends_at=ends_at)
            permissions = old.permissions
            if permissions is not None:
                # What the owner lost since is gone from the old token already; the copy leaves it out.
                held = owner_permissions(user)
                permissions = [p for p in permissions if p in held]
            token, plaintext = Token.objects.issue(
                user=user,
                name=old.name,
                purpose=old.purpose,
                expires_at=expires_at,
                actor=actor,
                ip=ip,
                policy=policy,
                now=now,
                nonce=nonce,
                access=old.access,
                permissions=permissions,
                allowed_ips=old.allowed_ips,
                replaces=old,
                caller=caller,
            )
            until = ends_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            TokenEvent.objects.bulk_create(
                [
                    TokenEvent(
                        user_id=user.pk,
                        token=old,
                        kind=TokenEvent.Kind.ROTATED,
                        actor=actor,
                        ip=ip,
                        at=now,
                        detail=f"→ #{token.pk}; old value works until {until}",
                    ),
                    TokenEvent(
                        user_id=user.pk,
                        token=token,
                        kind=TokenEvent.Kind.ROTATED,
                        actor=actor,
                        ip=ip,
                        at=now,
                        detail=f"replaces #{old.pk}",
                    ),
                ]
            )
        self.rotated_at, self.rotation_ends_at = now, ends_at
        self.replaced_by = token
        return token, plaintext

    def mail_owner_about_self_rotation(self, *, ip):
        """Mail the owner that this token rotated itself from *ip* (never a value); False if it failed.

        Called after the rotation committed: a token that replaced itself is what a thief holding it
        would do, so the owner hears of it at once with the address, and where to revoke both. At
        most SELF_ROTATION_MAILS_PER_HOUR a lineage an hour, so a token rotating itself in a loop
        cannot flood the owner's mailbox; the last one allowed says so, and every rotation stays in
        the Activity Stream.
        """
        recipients = notice_recipients(self.user)
        if not recipients:
            return False
        replacement = self.replaced_by_token
        sent_this_hour = replacement.self_rotations_since(timezone.now() - timedelta(hours=1))
        if sent_this_hour > SELF_ROTATION_MAILS_PER_HOUR:
            log.info("self-rotation notice for token %s not sent: hourly limit reached", self.pk)
            return False
        context = {
            "token": self,
            "replacement": replacement,
            "ip": ip or "?",
            "old_url": absolute_url("tokens:detail", self.pk),
            "new_url": absolute_url("tokens:detail", replacement.pk),
            "last_this_hour": sent_this_hour == SELF_ROTATION_MAILS_PER_HOUR,
            "limit": SELF_ROTATION_MAILS_PER_HOUR,
        }
        sent = True
        # One mail each: a service account's managers do not see one another's addresses.
        for person in recipients:
            try:
                mail_owner(person, "token_rotated", context, owner=self.user)
            except Exception as error:  # whatever failed, the rotation itself stands
                log.error("self-rotation notice for token %s not sent: %s", self.pk, type(error).__name__)
                sent = False
        return sent

    def self_rotations_since(self, moment):
        """Return how many self-rotations since *moment* made this token and its predecessors.

        Walks back the lineage one query a step, and no further than the limit needs.
        """
        count, token = 0, self
        while (
            token is not None
            and token.replaces_id is not None
            and token.created_at >= moment
            and count <= SELF_ROTATION_MAILS_PER_HOUR
        ):
            if token.made_with_id == token.replaces_id:
                count += 1
            token = Token.objects.filter(pk=token.replaces_id).first()
        return count

    def shorten(self, expires_at, *, actor):
        """Bring the expiry forward to *expires_at* (policy maximum lowered) and tell the owner."""
        # One row lock, the token's own (docs/security.md, "Lock order").
        with transaction.atomic():
            changed = (
                Token.objects.filter(pk=self.pk, revoked_at__isnull=True)
                .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at))
                .update(expires_at=expires_at)
            )
            if changed:
                TokenEvent.objects.create(
                    user_id=self.user_id,
                    token=self,
                    kind=TokenEvent.Kind.SHORTENED,
                    actor=actor,
                    detail=expires_at.isoformat(),
                )
        self.refresh_from_db(fields=["expires_at"])
        return bool(changed)

    def move_to_service_account(self, account, *, actor=None):
        """Give this person's token to the service account *account*: same value, limits and history.

        For integrations built on a person's token before service accounts existed: the token row
        (digest, expiry, access, permissions, addresses, counters, usage) stays as it is and only
        changes owner; its events move along. Refused (ValidationError) unless the token is active,
        already belongs to a service account, names permissions the account does not hold, or its
        name is taken by an active token of the account. The old owner and each manager get an event.
        """
        new_owner = account.user
        with transaction.atomic():
            # Lock order (docs/security.md): owners first (the lower id first), then the token's row.
            for owner_id in sorted({self.user_id, new_owner.pk}):
                lock_owner(owner_id)
            current = Token.objects.select_for_update(no_key=True).select_related("user").get(pk=self.pk)
            previous_owner = current.user
            if ServiceAccount.objects.filter(user_id=previous_owner.pk).exists():
                raise ValidationError(_("This token belongs to a service account already."))
            if current.status != TokenStatus.ACTIVE:
                raise ValidationError(
                    _("Only an active token can be moved; this one is %(status)s.")
                    % {"status": TokenStatus(current.status).label.lower()}
                )
            if current.permissions is not None:
                missing = set(current.permissions) - owner_permissions(new_owner)
                if missing:
                    raise ValidationError(
                        _("The service account does not hold these permissions of the token: %(missing)s.")
                        % {"missing": ", ".join(sorted(missing))}
                    )
            Token.objects.check_name_free(user_id=new_owner.pk, name=current.name)
            Token.objects.filter(pk=self.pk).update(user=new_owner)
            TokenEvent.objects.filter(token_id=self.pk).update(user=new_owner)
            # The requests stay the token's history: deleting the old owner later must not delete them.
            UsageRecord.objects.filter(token_id=self.pk).update(user=new_owner)
            now = timezone.now()
            detail = f"{current.name} (…{current.last_characters}) → {new_owner.get_username()}"[:255]
            moved = [TokenEvent(user=new_owner, token_id=self.pk, actor=actor, at=now, detail=detail)]
            # The old owner and the managers see the move in their own streams; the token's page is
            # the account's from now on, so their entries name it without linking to it.
            people = [previous_owner, *account.managers().exclude(pk=previous_owner.pk)]
            moved += [TokenEvent(user=person, actor=actor, at=now, detail=detail) for person in people]
            for event in moved:
                event.kind = TokenEvent.Kind.TOKEN_MOVED
            TokenEvent.objects.bulk_create(moved)
        self.user = new_owner
        return people
