"""Keyless CI: trust policies, the exchanges they answered, and the job token ids already used.

A trust policy says which CI jobs (an issuer, an audience, claim conditions) may trade their own
OpenID Connect token for a short-lived token of the policy's owner, and what that token may do. The
checks of the job's token itself (signature, times, replay) live in tokens/exchange.py; what a policy
accepts and what it mints live here, so the pages, the API and the admin share them.

The owner is a plain user: a service account's user owns a policy like a person does, and the people
who manage the account manage its policies (``manageable_by``), recorded as the actor.
"""

import fnmatch
import re
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, models, transaction
from django.db.models import Max, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ..constants import NAME_MAX_LENGTH, Access
from ..issuers import issuer_label
from .events import TokenEvent
from .policy import SitePolicy, describe_lifetime
from .restrictions import clean_access, clean_allowed_ips, clean_permissions, owner_permissions
from .service_accounts import ServiceAccount
from .tokens import Token, clean_name, lock_owner

DEFAULT_TOKEN_LIFETIME = timedelta(minutes=15)
MAX_TOKEN_LIFETIME = timedelta(hours=1)
MIN_TOKEN_LIFETIME = timedelta(minutes=1)
DEFAULT_MAX_LIVE_TOKENS = 10
MAX_LIVE_TOKENS_LIMIT = 100
MAX_CONDITIONS = 20
CONDITION_MAX_LENGTH = 255
# Claims that name the repository or project a job runs for (GitHub, GitLab). Every policy pins one of
# them, so no policy can trust every job an issuer signs for.
PINNING_CLAIMS = ("repository", "repository_id", "project_path", "project_id")
CLAIM_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
GLOB_CHARACTERS = "*?["
TEXT_MAX_LENGTH = 255
NAME_TAKEN = _("You already have a trust policy with this name.")


def _literal_prefix(pattern):
    """Return the part of *pattern* before its first glob character."""
    for index, character in enumerate(pattern):
        if character in GLOB_CHARACTERS:
            return pattern[:index]
    return pattern


def clean_conditions(conditions):
    """Return *conditions* ({claim: exact value or glob}) checked; raise ValidationError({"conditions": …}).

    One of PINNING_CLAIMS must be given with a literal start (``my-org/*`` pins an organisation;
    ``*`` or ``*/app`` pins nothing).
    """
    if not isinstance(conditions, dict) or not conditions:
        raise ValidationError({"conditions": _("Give at least one claim condition, as {claim: value}.")})
    if len(conditions) > MAX_CONDITIONS:
        raise ValidationError({"conditions": _("Use at most %(n)d conditions.") % {"n": MAX_CONDITIONS}})
    cleaned = {}
    for claim, pattern in conditions.items():
        if not isinstance(claim, str) or not CLAIM_NAME.fullmatch(claim):
            raise ValidationError(
                {"conditions": _("A claim name is letters, digits and _ . : - (at most 64).")}
            )
        if (
            not isinstance(pattern, str)
            or not pattern.strip()
            or len(pattern) > CONDITION_MAX_LENGTH
            or not pattern.isprintable()
        ):
            raise ValidationError(
                {
                    "conditions": _("The condition on “%(claim)s” must be text of 1 to %(n)d characters.")
                    % {"claim": claim, "n": CONDITION_MAX_LENGTH}
                }
            )
        cleaned[claim] = pattern.strip()
    if not any(_literal_prefix(cleaned.get(claim, "")) for claim in PINNING_CLAIMS):
        raise ValidationError(
            {
                "conditions": _(
                    "Pin the repository or project: a condition on one of %(claims)s that does not "
                    "start with a wildcard."
                )
                % {"claims": ", ".join(PINNING_CLAIMS)}
            }
        )
    return cleaned


def claim_text(value):
    """Return a claim's value as the text a condition is matched against, or None for lists and objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    return None


def conditions_hold(conditions, claims):
    """Return True when every condition matches its claim exactly or as a glob (case-sensitive)."""
    for claim, pattern in conditions.items():
        text = claim_text(claims.get(claim))
        if text is None:
            return False
        if not fnmatch.fnmatchcase(text, pattern):
            return False
    return True


def _whole_number(field, value, low, high, message):
    # JSON numbers only: true is an int to Python, and 900.5 or "900" are not whole numbers of seconds.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError({field: message})
    return value


class TrustPolicyQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)

    def manageable_by(self, user):
        """Return the policies *user* manages: their own and those of the service accounts they manage now."""
        return self.filter(
            Q(user=user) | Q(user__service_account__in=ServiceAccount.objects.managed_by(user))
        )

    def with_last_exchange(self):
        """Annotate ``last_exchange_at``: when each policy last minted a token (None: never)."""
        return self.annotate(last_exchange_at=Max("exchanges__at", filter=Q(exchanges__accepted=True)))


class TrustPolicyManager(models.Manager.from_queryset(TrustPolicyQuerySet)):
    def check_fields(self, *, owner, exclude_pk=None, **fields):
        """Return the given *fields* cleaned for *owner*; raise one ValidationError naming each bad one.

        A field not given is not checked. The permissions must be held by the owner: a policy can
        never mint more than its owner may do.
        """
        cleaners = {
            "name": clean_name,
            "issuer": _clean_issuer,
            "audience": _clean_audience,
            "conditions": clean_conditions,
            "access": clean_access,
            "permissions": lambda value: clean_permissions(owner, value),
            "allowed_ips": clean_allowed_ips,
            "token_lifetime": lambda value: _whole_number(
                "token_lifetime",
                value,
                int(MIN_TOKEN_LIFETIME.total_seconds()),
                int(MAX_TOKEN_LIFETIME.total_seconds()),
                _("Use a whole number of seconds from 60 to 3600 (an hour)."),
            ),
            "max_live_tokens": lambda value: _whole_number(
                "max_live_tokens",
                value,
                1,
                MAX_LIVE_TOKENS_LIMIT,
                _("Use a whole number from 1 to %(n)d.") % {"n": MAX_LIVE_TOKENS_LIMIT},
            ),
        }
        cleaned, errors = {}, {}
        for field, value in fields.items():
            try:
                cleaned[field] = cleaners[field](value)
            except ValidationError as error:
                errors.update(error.message_dict)
        if "token_lifetime" in cleaned:
            # The site policy's lifetimes bind minted tokens too: refuse here, not at every exchange.
            site = SitePolicy.load()
            lifetime = timedelta(seconds=cleaned["token_lifetime"])
            if not site.minimum_lifetime <= lifetime <= site.maximum_lifetime:
                errors["token_lifetime"] = [
                    _("The site policy allows lifetimes from %(min)s to %(max)s.")
                    % {
                        "min": describe_lifetime(site.minimum_lifetime),
                        "max": describe_lifetime(site.maximum_lifetime),
                    }
                ]
        if "name" in cleaned:
            taken = self.for_user(owner).filter(name=cleaned["name"])
            if exclude_pk is not None:
                taken = taken.exclude(pk=exclude_pk)
            if taken.exists():
                errors["name"] = [NAME_TAKEN]
        if errors:
            raise ValidationError(errors)
        return cleaned

    def create_policy(self, *, owner, actor, ip=None, **fields):
        """Create a trust policy for *owner* (checked by ``check_fields``) and record it; return it."""
        fields.setdefault("audience", settings.SITE_URL)
        cleaned = self.check_fields(owner=owner, **fields)
        missing = {"name", "issuer", "conditions"} - set(cleaned)
        if missing:
            raise ValidationError({field: [_("This field is required.")] for field in sorted(missing)})
        with transaction.atomic():
            try:
                with transaction.atomic():
                    policy = self.create(user=owner, **cleaned)
            except IntegrityError:
                # Two creates with one name at once: the constraint decided.
                raise ValidationError({"name": NAME_TAKEN}) from None
            policy.record(TokenEvent.Kind.TRUST_CHANGED, actor=actor, ip=ip, detail=f"created {policy.name}")
        return policy


def _clean_issuer(issuer):
    if not isinstance(issuer, str) or issuer not in settings.OIDC_FEDERATION_ISSUERS:
        raise ValidationError(
            {"issuer": _("Choose an issuer the administrator allows (OIDC_FEDERATION_ISSUERS).")}
        )
    return issuer


def _clean_audience(audience):
    if not isinstance(audience, str) or not audience.strip() or len(audience) > TEXT_MAX_LENGTH:
        raise ValidationError(
            {"audience": _("Enter the audience the job asks for (at most %(n)d characters).") % {"n": 255}}
        )
    if not audience.isprintable():
        raise ValidationError({"audience": _("The audience cannot contain control characters.")})
    return audience.strip()


class TrustPolicy(models.Model):
    """Which CI jobs may exchange their identity token for a token of ``user``, and its limits."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="trust_policies",
    )
    name = models.CharField(verbose_name=_("name"), max_length=NAME_MAX_LENGTH)
    issuer = models.CharField(verbose_name=_("issuer"), max_length=TEXT_MAX_LENGTH)
    audience = models.CharField(
        verbose_name=_("audience"),
        max_length=TEXT_MAX_LENGTH,
        help_text=_("The aud the job's token must carry: what the job asks its CI for."),
    )
    conditions = models.JSONField(
        verbose_name=_("claim conditions"),
        help_text=_("{claim: exact value or glob}; every one must hold. One pins the repository or project."),
    )
    access = models.CharField(
        verbose_name=_("access"), max_length=10, choices=Access.choices, default=Access.READ_WRITE
    )
    permissions = models.JSONField(verbose_name=_("permissions"), null=True, blank=True, default=None)
    allowed_ips = models.JSONField(verbose_name=_("allowed client addresses"), default=list, blank=True)
    token_lifetime = models.PositiveIntegerField(
        verbose_name=_("token lifetime (seconds)"), default=int(DEFAULT_TOKEN_LIFETIME.total_seconds())
    )
    max_live_tokens = models.PositiveIntegerField(
        verbose_name=_("most live tokens"), default=DEFAULT_MAX_LIVE_TOKENS
    )
    created_at = models.DateTimeField(verbose_name=_("created at"), default=timezone.now, editable=False)

    objects = TrustPolicyManager()

    class Meta:
        verbose_name = _("trust policy")
        verbose_name_plural = _("trust policies")
        ordering = ("user", "pk")
        indexes = [models.Index(fields=["issuer", "id"], name="trust_policy_issuer")]
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="trust_policy_name_once"),
            models.CheckConstraint(
                condition=Q(token_lifetime__gte=60, token_lifetime__lte=3600), name="trust_policy_lifetime"
            ),
            models.CheckConstraint(
                condition=Q(max_live_tokens__gte=1, max_live_tokens__lte=MAX_LIVE_TOKENS_LIMIT),
                name="trust_policy_live_tokens",
            ),
            models.CheckConstraint(condition=Q(access__in=Access.values), name="trust_policy_access_known"),
        ]

    def __str__(self):
        return self.name

    @property
    def issuer_label(self):
        return issuer_label(self.issuer)

    @property
    def issuer_allowed(self):
        return self.issuer in settings.OIDC_FEDERATION_ISSUERS

    def live_tokens(self, now=None):
        """Return this policy's minted tokens that still work."""
        return Token.objects.filter(exchange__policy=self).active(now)

    def record(self, kind, *, actor=None, ip=None, detail="", token=None, at=None):
        TokenEvent.objects.create(
            user_id=self.user_id,
            token=token,
            kind=kind,
            actor=actor,
            ip=ip,
            at=at or timezone.now(),
            detail=detail[:TEXT_MAX_LENGTH],
        )

    def update(self, *, actor, ip=None, **fields):
        """Change the given fields (checked as on creation); record one event. Return the changed names."""
        cleaned = TrustPolicy.objects.check_fields(owner=self.user, exclude_pk=self.pk, **fields)
        changed = {field: value for field, value in cleaned.items() if getattr(self, field) != value}
        if not changed:
            return []
        with transaction.atomic():
            try:
                with transaction.atomic():
                    TrustPolicy.objects.filter(pk=self.pk).update(**changed)
            except IntegrityError:
                raise ValidationError({"name": NAME_TAKEN}) from None
            self.record(
                TokenEvent.Kind.TRUST_CHANGED,
                actor=actor,
                ip=ip,
                detail=f"changed {self.name}: {', '.join(sorted(changed))}",
            )
        for field, value in changed.items():
            setattr(self, field, value)
        return sorted(changed)

    def remove(self, *, actor, ip=None):
        """Delete the policy and revoke every token it minted that still works; return how many."""
        with transaction.atomic():
            lock_owner(self.user_id)
            live = list(self.live_tokens().select_related("user"))
            for token in live:
                token.revoke(actor=actor, ip=ip, detail=f"trust policy {self.name} deleted")
            self.record(TokenEvent.Kind.TRUST_CHANGED, actor=actor, ip=ip, detail=f"deleted {self.name}")
            self.delete()
        return len(live)

    def accepts(self, claims):
        """Return True when verified *claims* carry the policy's audience and meet its conditions."""
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        return self.audience in audiences and conditions_hold(self.conditions, claims)

    def pins(self, claims):
        """Return True when *claims* come from the repository or project this policy pins.

        A refused exchange is shown to the owners whose repository the job ran for, and to nobody else.
        """
        pinned = {claim: self.conditions[claim] for claim in PINNING_CLAIMS if claim in self.conditions}
        return conditions_hold(pinned, claims)

    def mint(self, *, job, purpose, ip=None, now=None):
        """Issue a token of the owner with this policy's limits, named after the policy and *job*.

        Return ``(token, plaintext)``. Raise ValidationError when the policy already has its most
        live tokens, or the owner's own limits refuse (the site policy's active-token cap…).
        """
        now = now or timezone.now()
        # No savepoint of its own: a refusal here ends the caller's transaction too (exchange() wants that).
        with transaction.atomic(savepoint=False):
            # The owner's lock, as issue() takes it: two exchanges at once cannot both pass the cap.
            lock_owner(self.user_id)
            if self.live_tokens(now).count() >= self.max_live_tokens:
                raise ValidationError(
                    {"__all__": _("The policy has %(n)d live tokens already.") % {"n": self.max_live_tokens}}
                )
            permissions = self.permissions
            if permissions is not None:
                # What the owner lost since the policy was made is not minted.
                held = owner_permissions(self.user)
                permissions = [p for p in permissions if p in held]
            base = f"{self.name[: NAME_MAX_LENGTH - 40]} · {job[:30]}"
            issue = partial(
                Token.objects.issue,
                user=self.user,
                purpose=purpose,
                expires_at=now + timedelta(seconds=self.token_lifetime),
                actor=self.user,
                ip=ip,
                now=now,
                access=self.access,
                permissions=permissions,
                allowed_ips=self.allowed_ips,
            )
            try:
                return issue(name=base)
            except ValidationError as error:
                if "name" not in error.message_dict:
                    raise
            # Several jobs of one run (a matrix) share the run id: later ones get a number. Rare, so
            # the names in use are read only then.
            taken = set(
                Token.objects.for_user(self.user_id)
                .active(now)
                .filter(name__startswith=base)
                .values_list("name", flat=True)
            )
            n = 2
            while f"{base} ({n})" in taken:
                n += 1
            return issue(name=f"{base} ({n})")


class TokenExchangeQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)


class TokenExchange(models.Model):
    """One attempt to trade a CI job's token, accepted or refused, with the reason the caller is not told."""

    at = models.DateTimeField(verbose_name=_("time"), default=timezone.now)
    ip = models.GenericIPAddressField(verbose_name=_("client IP"), null=True, blank=True)
    accepted = models.BooleanField(verbose_name=_("accepted"))
    reason = models.CharField(verbose_name=_("reason"), max_length=TEXT_MAX_LENGTH, blank=True)
    # What the job's token says. Only a verified token's claims are kept: an unverified one may say anything.
    issuer = models.CharField(verbose_name=_("issuer"), max_length=TEXT_MAX_LENGTH, blank=True)
    subject = models.CharField(verbose_name=_("subject"), max_length=TEXT_MAX_LENGTH, blank=True)
    repository = models.CharField(
        verbose_name=_("repository or project"), max_length=TEXT_MAX_LENGTH, blank=True
    )
    job = models.CharField(verbose_name=_("job"), max_length=TEXT_MAX_LENGTH, blank=True)
    job_url = models.CharField(verbose_name=_("job URL"), max_length=500, blank=True)
    # The policy that minted the token, or whose repository a refused job ran for; None when no owner's.
    policy = models.ForeignKey(
        TrustPolicy,
        verbose_name=_("trust policy"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="exchanges",
    )
    policy_name = models.CharField(verbose_name=_("policy name"), max_length=NAME_MAX_LENGTH, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="token_exchanges",
    )
    token = models.OneToOneField(
        Token,
        verbose_name=_("minted token"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchange",
    )

    objects = TokenExchangeQuerySet.as_manager()

    class Meta:
        verbose_name = _("token exchange")
        verbose_name_plural = _("token exchanges")
        ordering = ("-at", "-id")
        indexes = [
            models.Index(fields=["user", "-at"], name="exchange_user_at"),
            models.Index(fields=["policy", "-at"], name="exchange_policy_at"),
        ]

    def __str__(self):
        outcome = _("accepted") if self.accepted else _("refused")
        return f"{outcome} {self.subject or '?'} {self.at:%Y-%m-%d %H:%M}"


class UsedJobTokenQuerySet(models.QuerySet):
    def claim(self, *, issuer, jti, expires_at, now):
        """Mark job token *jti* of *issuer* used until *expires_at*; return False if it was used already.

        The unique constraint decides between two exchanges of one token at once. Ids whose tokens
        have expired are pruned first: an expired token is refused before it gets here.
        """
        self.filter(expires_at__lt=now).delete()
        connection = connections[self.db]
        table = self.model._meta.db_table
        # One statement, no savepoint: the constraint's conflict is an answer here, not an error.
        # (PostgreSQL and SQLite both speak ON CONFLICT DO NOTHING and count the rows it wrote.)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (issuer, jti, expires_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [issuer, jti, connection.ops.adapt_datetimefield_value(expires_at)],
            )
            return cursor.rowcount == 1


class UsedJobToken(models.Model):
    """A job token id (``jti``) already exchanged, kept until the token expires: each is used once."""

    issuer = models.CharField(max_length=TEXT_MAX_LENGTH)
    jti = models.CharField(max_length=TEXT_MAX_LENGTH)
    expires_at = models.DateTimeField()

    objects = UsedJobTokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("used job token")
        constraints = [models.UniqueConstraint(fields=["issuer", "jti"], name="used_job_token_once")]
        indexes = [models.Index(fields=["expires_at"], name="used_job_token_expires")]

    def __str__(self):
        return self.jti
