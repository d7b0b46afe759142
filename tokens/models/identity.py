"""Who is who at the organisation's identity provider: a person is the pair (issuer, subject).

The provider's ``sub`` is the only stable, never re-assigned name it gives a person; an e-mail
address or a username can be handed to someone else after its owner leaves. So a provider sign-in
finds its account by (issuer, subject) here and nowhere else: an account is linked to an identity
once (by its first provider sign-in, by its owner on the profile, or by an administrator), never by a
guess from matching addresses.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# OpenID Connect limits ``sub`` to 255 ASCII characters; issuers are URLs, kept as long as they come.
SUBJECT_MAX_LENGTH = 255
ISSUER_MAX_LENGTH = 500


class ProviderIdentityQuerySet(models.QuerySet):
    def of(self, *, issuer, subject):
        """Return the identity (issuer, *subject*) with its user, or None."""
        return self.select_related("user").filter(issuer=issuer, subject=subject).first()

    def link(self, *, user, issuer, subject, now=None):
        """Link *user* to the identity (issuer, *subject*) and return it.

        The unique constraints refuse a second account for the same identity and a second identity
        at the same issuer for one account (IntegrityError): linking never moves an identity.
        """
        return self.create(user=user, issuer=issuer, subject=subject, created_at=now or timezone.now())

    def signed_in(self, identity, *, now=None):
        """Note a provider sign-in of *identity* now."""
        identity.last_sign_in_at = now or timezone.now()
        self.filter(pk=identity.pk).update(last_sign_in_at=identity.last_sign_in_at)


class ProviderIdentity(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="provider_identities",
        verbose_name=_("user"),
    )
    issuer = models.CharField(
        _("issuer"),
        max_length=ISSUER_MAX_LENGTH,
        help_text=_("The provider's issuer URL, exactly as its ID tokens name it."),
    )
    subject = models.CharField(
        _("subject"),
        max_length=SUBJECT_MAX_LENGTH,
        help_text=_("The provider's never re-assigned id of the person (the “sub” claim)."),
    )
    created_at = models.DateTimeField(
        _("linked at"),
        default=timezone.now,
    )
    last_sign_in_at = models.DateTimeField(
        _("last provider sign-in"),
        null=True,
        blank=True,
    )

    objects = ProviderIdentityQuerySet.as_manager()

    class Meta:
        verbose_name = _("provider identity")
        verbose_name_plural = _("provider identities")
        ordering = ("issuer", "subject")
        constraints = [
            models.UniqueConstraint(fields=("issuer", "subject"), name="tokens_identity_unique_subject"),
            models.UniqueConstraint(fields=("user", "issuer"), name="tokens_identity_one_per_issuer"),
        ]

    def __str__(self):
        return f"{self.subject} @ {self.issuer}"
