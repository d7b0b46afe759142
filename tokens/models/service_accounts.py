"""Service accounts: users no person signs in as, owned by a team, whose tokens outlive any one person.

A service account is a user with a ``ServiceAccount`` row: its tokens are ordinary tokens (issued,
checked, limited, rotated and recorded by the same code as a person's). Who may manage them is the one
rule here: an active person who is a member of the owning team (a Django group) and holds the manager
role for it, granted by an administrator (``ManagerRole``) or by membership of a provider group named
after the team (``SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX``, for groups synced by SCIM or sign-in).
Nothing is cached: losing the membership, the role or the account's activity loses access on the
very next request.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Concat
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .events import TokenEvent


def is_service_account(user):
    """Return True when *user* is a service account: no sign-in path may ever let anyone in as it.

    The password form, the password reset and any organisation sign-in all ask this one question,
    whatever password or identity the account was given.
    """
    if user is None or not getattr(user, "pk", None):
        return False
    return ServiceAccount.objects.filter(user_id=user.pk).exists()


def _role_suffix():
    return settings.SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX


class ServiceAccountQuerySet(models.QuerySet):
    def managed_by(self, user):
        """Return the service accounts *user* manages now: member of the team and holding the role.

        An inactive or anonymous user, or a service account, manages none. One query, run when read:
        the pages and the API ask on every request, so nothing here can be out of date.
        """
        if not user.is_authenticated or not user.is_active:
            return self.none()
        role = Q(team__in=ManagerRole.objects.filter(user=user).values("team"))
        suffix = _role_suffix()
        if suffix:
            # The provider group "<team><suffix>" among the user's groups grants the role too.
            role_group = Concat(models.OuterRef("team__name"), models.Value(suffix))
            role |= Q(models.Exists(Group.objects.filter(user=user, name=role_group)))
        accounts = self.filter(team__in=user.groups.values("pk")).filter(role)
        # A service account manages nothing, even if put in a team and given the role.
        return accounts.exclude(models.Exists(ServiceAccount.objects.filter(user_id=user.pk)))

    def without_active_manager(self):
        """Return the active service accounts no active person manages any more."""
        users = get_user_model().objects.filter(is_active=True, service_account__isnull=True)
        team = models.OuterRef("team")
        role_holders = users.filter(manager_roles__team=team, groups=team)
        condition = models.Exists(role_holders)
        suffix = _role_suffix()
        if suffix:
            # The provider group "<team><suffix>": its members hold the role if they are in the team.
            by_group = users.filter(groups=team).filter(
                groups__name=Concat(models.OuterRef("team__name"), models.Value(suffix))
            )
            condition |= models.Exists(by_group)
        return self.filter(user__is_active=True).exclude(condition)


class ServiceAccountManager(models.Manager.from_queryset(ServiceAccountQuerySet)):
    def claim_unmanaged(self, now=None):
        """Return the accounts that lost their last manager since the last call, each marked and recorded.

        An account is returned once per loss: it is marked ``unmanaged_notified_at`` (two runs at once
        claim each account once), and the mark is cleared as soon as it has a manager again, so a
        later loss is told again.
        """
        now = now or timezone.now()
        unmanaged = self.without_active_manager()
        self.filter(unmanaged_notified_at__isnull=False).exclude(pk__in=unmanaged.values("pk")).update(
            unmanaged_notified_at=None
        )
        claimed = []
        for account in unmanaged.filter(unmanaged_notified_at__isnull=True).select_related("user", "team"):
            with transaction.atomic():
                if not self.filter(pk=account.pk, unmanaged_notified_at__isnull=True).update(
                    unmanaged_notified_at=now
                ):
                    continue  # another run has it
                TokenEvent.objects.create(
                    user_id=account.user_id, kind=TokenEvent.Kind.ACCOUNT_UNMANAGED, at=now
                )
            claimed.append(account)
        return claimed

    def release_unmanaged_claim(self, account, now):
        """Undo ``claim_unmanaged`` for *account* (its mail failed): the next run tells it again."""
        self.filter(pk=account.pk, unmanaged_notified_at=now).update(unmanaged_notified_at=None)

    def create_account(self, *, username, team, description="", created_by=None, ip=None):
        """Create the user (no usable password, no e-mail) and its service account; record the event."""
        with transaction.atomic():
            user = get_user_model()(username=username, email="")
            user.set_unusable_password()
            user.full_clean(exclude=["password"])
            user.save()
            account = self.create(user=user, team=team, description=description, created_by=created_by)
            TokenEvent.objects.create(
                user=user,
                kind=TokenEvent.Kind.ACCOUNT_CREATED,
                actor=created_by,
                ip=ip,
                detail=str(_("team %(team)s") % {"team": team.name})[:255],
            )
        return account


class ServiceAccount(models.Model):
    """A user that belongs to a team instead of a person: its tokens keep working when people leave."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="service_account",
    )
    team = models.ForeignKey(
        Group,
        verbose_name=_("team"),
        on_delete=models.PROTECT,
        related_name="service_accounts",
        help_text=_("Members of this group who hold its manager role manage the account's tokens."),
    )
    description = models.TextField(
        verbose_name=_("description"),
        blank=True,
        help_text=_("What the account is for and which systems use its tokens."),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(verbose_name=_("created at"), default=timezone.now)
    unmanaged_notified_at = models.DateTimeField(
        verbose_name=_("administrators told it has no manager at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("Set when the team's administrators were mailed; cleared once a manager is back."),
    )

    objects = ServiceAccountManager()

    class Meta:
        verbose_name = _("service account")
        verbose_name_plural = _("service accounts")
        ordering = ("user__username",)
        indexes = [models.Index(fields=["team"], name="service_account_team")]

    def __str__(self):
        return self.user.get_username()

    def managers(self):
        """Return the active people who manage this account now (members of the team holding the role)."""
        role = Q(manager_roles__team=self.team_id)
        suffix = _role_suffix()
        if suffix:
            role |= Q(pk__in=Group.objects.filter(name=self.team.name + suffix).values("user"))
        return (
            get_user_model()
            .objects.filter(is_active=True, service_account__isnull=True, groups=self.team_id)
            .filter(role)
            .distinct()
            .order_by("username")
        )

    def has_active_manager(self):
        return self.managers().exists()

    def team_administrators(self):
        """Return whom to tell that no manager is left: active staff members of the team, or superusers."""
        return (
            get_user_model()
            .objects.filter(is_active=True, service_account__isnull=True)
            .filter(Q(is_staff=True, groups=self.team_id) | Q(is_superuser=True))
            .distinct()
            .order_by("username")
        )

    def move_to(self, team, *, actor, ip=None):
        """Give the account to another *team*: its managers change at once; record the event."""
        if team.pk == self.team_id:
            return False
        old = self.team.name
        with transaction.atomic():
            ServiceAccount.objects.filter(pk=self.pk).update(team=team, unmanaged_notified_at=None)
            TokenEvent.objects.create(
                user_id=self.user_id,
                kind=TokenEvent.Kind.TEAM_CHANGED,
                actor=actor,
                ip=ip,
                detail=f"{old} → {team.name}"[:255],
            )
        self.team, self.unmanaged_notified_at = team, None
        return True

    def set_active(self, active, *, actor, ip=None):
        """Activate or deactivate the account: deactivated, its tokens are refused on the next request."""
        active = bool(active)
        with transaction.atomic():
            changed = (
                get_user_model()
                .objects.filter(pk=self.user_id)
                .exclude(is_active=active)
                .update(is_active=active)
            )
            if changed:
                TokenEvent.objects.create(
                    user_id=self.user_id,
                    kind=TokenEvent.Kind.ACCOUNT_ACTIVATED if active else TokenEvent.Kind.ACCOUNT_DEACTIVATED,
                    actor=actor,
                    ip=ip,
                )
        self.user.is_active = active
        return bool(changed)


class ManagerRole(models.Model):
    """The manager role for a team's service accounts, held by *user* while they are in the team."""

    team = models.ForeignKey(
        Group,
        verbose_name=_("team"),
        on_delete=models.CASCADE,
        related_name="manager_roles",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("manager"),
        on_delete=models.CASCADE,
        related_name="manager_roles",
        help_text=_("Manages the team's service accounts while a member of the team."),
    )
    granted_at = models.DateTimeField(verbose_name=_("granted at"), default=timezone.now)

    class Meta:
        verbose_name = _("service account manager")
        verbose_name_plural = _("service account managers")
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="manager_role_once")]
        indexes = [models.Index(fields=["user"], name="manager_role_user")]

    def __str__(self):
        return f"{self.user} ({self.team})"


def notice_recipients(user):
    """Return the people to mail about *user*'s credentials: the person, or a service account's managers.

    A service account reads no mail: each of its managers gets the notice (one mail each). Only
    people with an address are returned.
    """
    account = ServiceAccount.objects.filter(user_id=user.pk).select_related("team").first()
    if account is None:
        return [user] if user.email else []
    return [manager for manager in account.managers() if manager.email]
