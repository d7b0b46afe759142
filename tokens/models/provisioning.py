"""What SCIM provisioning knows of a person and a group: the provider's identifier, and that SCIM manages it.

A person the identity provider switches off is deactivated here, never erased: ``is_active`` is what every
token and legacy key check reads (tokens/auth.py joins the owner into its one lookup), so the next request
of any of their credentials, on any node, is refused; their tokens, events and usage stay for the audit.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .events import TokenEvent

# The longest externalId kept: providers send GUIDs, e-mail-like names or opaque ids, all far shorter.
EXTERNAL_ID_MAX_LENGTH = 255


class ProvisionedUserQuerySet(models.QuerySet):
    def visible(self):
        """Return the records SCIM still shows (a deleted person answers 404 to SCIM, but is kept)."""
        return self.filter(deleted_at__isnull=True)

    def by_external_id(self, external_id):
        """Return the record SCIM made for *external_id* (the provider's identifier of a person), or None.

        Sign-in with the same provider links an account SCIM created to the identity whose subject equals
        this identifier.
        """
        if not external_id:
            return None
        return self.visible().select_related("user").filter(external_id=external_id).first()


class ProvisionedUser(models.Model):
    """A person managed by SCIM: the provider's ``externalId``, when SCIM made or last changed them."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        verbose_name=_("person"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="provisioning",
    )
    external_id = models.CharField(
        verbose_name=_("external id"),
        max_length=EXTERNAL_ID_MAX_LENGTH,
        blank=True,
        help_text=_("The identity provider's identifier of this person (SCIM externalId)."),
    )
    provider = models.CharField(
        verbose_name=_("provider"),
        max_length=150,
        blank=True,
        help_text=_("The account whose provisioning token last changed this person."),
    )
    provisioned_at = models.DateTimeField(verbose_name=_("provisioned"), default=timezone.now)
    updated_at = models.DateTimeField(verbose_name=_("last change by SCIM"), default=timezone.now)
    deactivated_at = models.DateTimeField(verbose_name=_("deactivated by SCIM"), null=True, blank=True)
    deleted_at = models.DateTimeField(
        verbose_name=_("deleted by SCIM"),
        null=True,
        blank=True,
        help_text=_("The provider deleted this person: deactivated, hidden from SCIM, kept for the audit."),
    )

    objects = ProvisionedUserQuerySet.as_manager()

    class Meta:
        verbose_name = _("SCIM-managed person")
        verbose_name_plural = _("SCIM-managed people")
        ordering = ("user_id",)
        indexes = [models.Index(fields=["external_id"], name="provisioned_external_id")]
        permissions = [("scim_provision", _("Can provision people and groups by SCIM"))]

    def __str__(self):
        return self.external_id or str(self.user_id)

    @classmethod
    def record(cls, user, *, external_id, provider, was_active, deleted=False):
        """Record that SCIM wrote *user*; on a change of ``is_active`` add the event naming the provider.

        *provider* is the account whose provisioning token made the request (the identity provider's own
        account here). Call after the user is saved, in the same transaction. *was_active* is
        ``is_active`` as it was before SCIM's change (True for a new person).
        """
        now = timezone.now()
        with transaction.atomic():
            record, created = cls.objects.select_for_update().get_or_create(
                user=user,
                defaults={"provisioned_at": now},
            )
            record.external_id = external_id or ""
            record.provider = provider.get_username()
            record.updated_at = now
            if deleted:
                record.deleted_at = now
            if was_active and not user.is_active:
                record.deactivated_at = now
                _event(user, TokenEvent.Kind.DEACTIVATED, provider, now)
            elif not was_active and user.is_active and not created:
                record.deactivated_at = None
                _event(user, TokenEvent.Kind.REACTIVATED, provider, now)
            record.save()
        return record


def _event(user, kind, provider, at):
    # The provider's account is the actor and its name the detail: the owner's Activity Stream and the
    # event feed say who switched the person off.
    TokenEvent.objects.create(user=user, kind=kind, at=at, actor=provider, detail=provider.get_username())


class ProvisionedGroup(models.Model):
    """A Django group SCIM created or took over: the provider's ``externalId``."""

    group = models.OneToOneField(
        Group,
        verbose_name=_("group"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="provisioning",
    )
    external_id = models.CharField(
        verbose_name=_("external id"),
        max_length=EXTERNAL_ID_MAX_LENGTH,
        blank=True,
    )
    updated_at = models.DateTimeField(verbose_name=_("last change by SCIM"), default=timezone.now)

    class Meta:
        verbose_name = _("SCIM-managed group")
        verbose_name_plural = _("SCIM-managed groups")

    def __str__(self):
        return self.external_id or str(self.group_id)
