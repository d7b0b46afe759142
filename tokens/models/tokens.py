from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import credentials
from ..constants import (
    DIGEST_LENGTH,
    LAST_CHARACTERS_LENGTH,
    NAME_MAX_LENGTH,
    PUBLIC_ID_LENGTH,
    PURPOSE_MAX_LENGTH,
)
from .base import Credential
from .events import TokenEvent
from .policy import ExpirationPolicy


def clean_name(name):
    """Return *name* trimmed, or raise ValidationError({"name": …})."""
    if not isinstance(name, str):
        raise ValidationError({"name": _("Enter a name.")})
    name = name.strip()
    if not name:
        raise ValidationError({"name": _("Enter a name.")})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError({"name": _("Use at most %(n)d characters.") % {"n": NAME_MAX_LENGTH}})
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise ValidationError({"name": _("The name cannot contain control characters.")})
    return name


def clean_purpose(purpose):
    if purpose is None:
        return ""
    if not isinstance(purpose, str):
        raise ValidationError({"purpose": _("Enter text.")})
    purpose = purpose.strip()
    if len(purpose) > PURPOSE_MAX_LENGTH:
        raise ValidationError({"purpose": _("Use at most %(n)d characters.") % {"n": PURPOSE_MAX_LENGTH}})
    if "\x00" in purpose:
        raise ValidationError({"purpose": _("The purpose cannot contain NUL characters.")})
    return purpose


def lock_owner(user_id):
    """Lock the owner's row for the rest of the transaction: one owner's token writes take turns.

    FOR NO KEY UPDATE, not FOR UPDATE: every usage INSERT's foreign-key check takes FOR KEY SHARE on
    this row and must never wait for it, or an owner's write and the traffic of their token deadlock
    (docs/security.md, "Lock order": owner, then token or key, then summaries).
    """
    get_user_model().objects.select_for_update(no_key=True).filter(pk=user_id).first()


class TokenStatus(models.TextChoices):
    """A token's derived status: the one list the querysets, pages, API, admin and badge use."""

    ACTIVE = "active", _("Active")
    EXPIRED = "expired", _("Expired")
    REVOKED = "revoked", _("Revoked")


class TokenQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)

    @staticmethod
    def status_condition(status, now=None):
        """Return the Q that selects tokens with the derived *status* (a TokenStatus value)."""
        now = now or timezone.now()
        return {
            TokenStatus.ACTIVE: Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now)),
            TokenStatus.EXPIRED: Q(revoked_at__isnull=True, expires_at__lte=now),
            TokenStatus.REVOKED: Q(revoked_at__isnull=False),
        }[status]

    def with_status(self, status, now=None):
        return self.filter(self.status_condition(status, now))

    def active(self, now=None):
        return self.with_status(TokenStatus.ACTIVE, now)

    def expired(self, now=None):
        return self.with_status(TokenStatus.EXPIRED, now)

    def revoked(self):
        return self.with_status(TokenStatus.REVOKED)

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

    def mark_first_use(self, pk, *, at):
        """Set the last use of never-used token *pk* to *at*; return True if this call was its first use.

        The one write the request path makes to a token row, once in the token's life (the summariser
        keeps the last use current afterwards). Only the token's row is locked (docs/security.md,
        "Lock order", step 2).
        """
        return bool(self.filter(pk=pk, last_used_at__isnull=True).update(last_used_at=at))

    def exceeding(self, maximum, now=None):
        """Return active tokens that live longer than *maximum* from now (or never expire)."""
        now = now or timezone.now()
        return self.active(now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now + maximum))


class AlreadyIssued(Exception):
    """The create form with this nonce was submitted before; ``token`` is what it created."""

    def __init__(self, token):
        super().__init__("already issued")
        self.token = token


class TokenManager(models.Manager.from_queryset(TokenQuerySet)):
    def issue(self, *, user, name, purpose="", expires_at, actor=None, ip=None, policy=None, now=None, nonce=None):
        """Create a token for *user* under the site policy and return ``(token, plaintext)``.

        The plaintext exists only in the return value: only its keyed digest is stored.
        Raise ValidationError with field errors when the name, purpose or expiry is not allowed.
        With a one-time *nonce* (from the create form), a second call with the same nonce creates
        nothing and raises AlreadyIssued with the first token: a resubmitted form never makes two.
        """
        now = now or timezone.now()
        name = clean_name(name)
        purpose = clean_purpose(purpose)
        with transaction.atomic():
            # Concurrent creates for one user queue here, so the name check and the active-token limit
            # below cannot both pass for two requests at once.
            lock_owner(user.pk)
            if nonce is not None:
                earlier = self.filter(user=user, creation_nonce=nonce).first()
                if earlier is not None:
                    raise AlreadyIssued(earlier)
            policy = policy or ExpirationPolicy.load()
            policy.check_expiry(user, expires_at, now)
            self.check_name_free(user_id=user.pk, name=name, now=now)
            active = self.for_user(user).active(now)
            if policy.max_active_tokens is not None and active.count() >= policy.max_active_tokens:
                raise ValidationError(
                    {
                        "__all__": _(
                            "You have reached the limit of %(n)d active tokens. Revoke one you no longer need first."
                        )
                        % {"n": policy.max_active_tokens}
                    }
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
            )
            TokenEvent.objects.create(
                user=user, token=token, kind=TokenEvent.Kind.CREATED, actor=actor or user, at=now, ip=ip,
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


class Token(Credential):
    """A named bearer token. The value itself is never stored: see ``credentials``."""

    event_field = "token"

    AlreadyIssued = AlreadyIssued

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

    objects = TokenManager()

    class Meta:
        verbose_name = _("token")
        verbose_name_plural = _("tokens")
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["user", "-created_at"], name="token_user_created"),
            models.Index(fields=["expires_at"], name="token_expires"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(name=""), name="token_name_not_empty"),
            models.UniqueConstraint(fields=["user", "creation_nonce"], name="token_creation_nonce_once"),
        ]

    def __str__(self):
        # Never the value or the digest: only what the owner chose to call it.
        return self.name

    @property
    def status(self):
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return TokenStatus.EXPIRED
        return TokenStatus.ACTIVE

    @property
    def is_active(self):
        return self.status == TokenStatus.ACTIVE

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
                user_id=self.user_id, token=self, kind=TokenEvent.Kind.RENAMED, actor=actor, ip=ip,
                detail=f"{old} → {name}",
            )

    def revoke(self, *, actor, ip=None, detail=""):
        """Revoke the token from the very next request on. A second revoke changes nothing."""
        return self._revoke(actor=actor, kind=TokenEvent.Kind.REVOKED, ip=ip, detail=detail)

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
                    user_id=self.user_id, token=self, kind=TokenEvent.Kind.SHORTENED, actor=actor,
                    detail=expires_at.isoformat(),
                )
        self.refresh_from_db(fields=["expires_at"])
        return bool(changed)
