"""SCIM 2.0 provisioning (RFC 7643, RFC 7644) on django-scim2: people and groups as the provider sees them.

django-scim2 brings the endpoints, the routing and the filter parser; these adapters say what a resource
holds here. A person is a Django user (``userName``, ``name.givenName``/``familyName``, one e-mail address,
``active``), with what SCIM alone needs (``externalId``, that SCIM manages them) in ProvisionedUser; a group
is a Django group. The schemas published describe exactly those attributes, no more, so a provider never
sends a value that would be dropped without a word.

``active: false`` and DELETE deactivate the person and never erase them (ProvisionedUser.record):
every token and legacy key of theirs is refused from the next request on, by the check that reads the
owner with the credential (tokens/auth.py).
"""

from urllib.parse import urljoin

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django_scim.adapters import SCIMGroup, SCIMUser
from django_scim.models import SCIMServiceProviderConfig

from ..models import ProvisionedGroup, ProvisionedUser
from ..models.provisioning import EXTERNAL_ID_MAX_LENGTH
from .scim_patch import MAX_OPERATIONS, ScimError

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
# The user's columns SCIM writes (a new person is saved whole).
SCIM_USER_FIELDS = ("username", "first_name", "last_name", "email", "is_active")
# The most resources one list answer holds (a provider pages through more with startIndex and count).
MAX_RESULTS = 100

User = get_user_model()


def base_location(request=None, *args, **kwargs):
    """Return this site's address as the client reached it: the start of every resource's location."""
    return request.build_absolute_uri("/")


def _attribute(name, kind="string", **traits):
    attribute = {
        "name": name,
        "type": kind,
        "multiValued": False,
        "description": traits.pop("description", name),
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    attribute.update(traits)
    return attribute


def _schema(urn, name, description, attributes):
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": urn,
        "name": name,
        "description": description,
        "attributes": attributes,
    }


def _reference(kinds):
    return [
        _attribute("value", mutability="immutable"),
        _attribute("$ref", "reference", referenceTypes=kinds, mutability="immutable"),
    ]


SCHEMAS = [
    _schema(
        USER_SCHEMA,
        "User",
        "A person who may sign in and hold tokens.",
        [
            _attribute("userName", required=True, uniqueness="server", description="The sign-in name."),
            _attribute(
                "name",
                "complex",
                subAttributes=[_attribute("givenName"), _attribute("familyName")],
                description="The person's name.",
            ),
            _attribute(
                "emails",
                "complex",
                multiValued=True,
                subAttributes=[_attribute("value")],
                description="One e-mail address is kept: the one marked primary, else the last.",
            ),
            # Always held (a person is active or not): a PATCH may replace it, never remove it; a new person
            # without it is active.
            _attribute(
                "active",
                "boolean",
                required=True,
                description="False stops every token and key of the person.",
            ),
            _attribute(
                "groups",
                "complex",
                multiValued=True,
                mutability="readOnly",
                subAttributes=[
                    *({**a, "mutability": "readOnly"} for a in _reference(["Group"])),
                    _attribute("display", mutability="readOnly"),
                ],
                description="The groups the person is in (change them through Groups).",
            ),
        ],
    ),
    _schema(
        GROUP_SCHEMA,
        "Group",
        "A Django group: its members hold its permissions, and so do their tokens.",
        [
            _attribute("displayName", required=True, uniqueness="server", description="The group's name."),
            _attribute(
                "members",
                "complex",
                multiValued=True,
                subAttributes=_reference(["User"]),
                description="The people in the group.",
            ),
        ],
    ),
]


def schemas(request=None):
    """Return the schemas published at /scim/v2/Schemas (django-scim2's SCHEMAS_GETTER)."""
    if request is None:
        return SCHEMAS
    return [
        {**s, "meta": {"resourceType": "Schema", "location": _location(request, "scim:schemas", s["id"])}}
        for s in SCHEMAS
    ]


def _location(request, name, key):
    return urljoin(base_location(request), reverse(name, kwargs={"uuid": key}))


def attribute_names(urn):
    """Return {lower-case name: name} of the attributes a PATCH may name on the resource of *urn*."""
    schema = next(s for s in SCHEMAS if s["id"] == urn)
    names = {a["name"].lower(): a["name"] for a in schema["attributes"]}
    names["externalid"] = "externalId"
    return names


class ServiceProviderConfig(SCIMServiceProviderConfig):
    """What the SCIM endpoint offers (RFC 7643, section 5)."""

    def to_dict(self):
        return {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": _("A token of this portal whose owner holds tokens.scim_provision."),
                    "primary": True,
                }
            ],
            "meta": {"resourceType": "ServiceProviderConfig", "location": self.location},
        }


def _resource_type(request, name, endpoint, schema, description):
    location = _location(request, "scim:resource-types", name)
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": name,
        "name": name,
        # Relative to the SCIM base address (RFC 7643, section 6).
        "endpoint": f"/{endpoint}",
        "description": str(description),
        "schema": schema,
        "meta": {"location": location, "resourceType": "ResourceType"},
    }


def _text(document, name, *, required=False, max_length=150):
    value = document.get(name)
    if value is None or value == "":
        if required:
            raise ScimError(400, _("%(name)s is required.") % {"name": name}, "invalidValue")
        return ""
    if not isinstance(value, str) or len(value) > max_length:
        raise ScimError(
            400,
            _("%(name)s must be text of at most %(n)d characters.") % {"name": name, "n": max_length},
            "invalidValue",
        )
    return value


def _object(document, name):
    value = document.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScimError(400, _("%(name)s must be an object.") % {"name": name}, "invalidValue")
    return value


def _list(document, name):
    value = document.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ScimError(400, _("%(name)s must be a list of objects.") % {"name": name}, "invalidValue")
    if len(value) > MAX_OPERATIONS:
        raise ScimError(400, _("%(name)s holds too many values.") % {"name": name}, "tooMany")
    return value


def _active(document):
    value = document.get("active")
    # Entra ID has sent the booleans as the strings "True" and "False".
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is not None and not isinstance(value, bool):
        raise ScimError(400, _("active must be true or false."), "invalidValue")
    return value


def _check_schemas(document, urn):
    declared = document.get("schemas")
    if declared is not None and (not isinstance(declared, list) or urn not in declared):
        detail = _("The resource must declare the schema %(urn)s.") % {"urn": urn}
        raise ScimError(400, detail, "invalidValue")


def required_attributes(urn):
    """Return the names of the attributes of *urn* that a resource always holds (a PATCH cannot remove)."""
    schema = next(s for s in SCHEMAS if s["id"] == urn)
    return [a["name"] for a in schema["attributes"] if a["required"]]


# Returned whatever a client asks (RFC 7643, section 7: "returned": "always").
ALWAYS_RETURNED = frozenset({"id", "schemas"})


def project(document, *, attributes=None, excluded=None):
    """Return *document* with only the ``attributes`` asked for, or without the ``excludedAttributes``.

    Names are compared without case, and a sub-attribute (``name.givenName``) keeps its whole parent.
    """

    def names(value):
        found = set()
        for item in (value or "").split(","):
            item = item.strip()
            if item.lower().startswith("urn:"):
                item = item.rsplit(":", 1)[-1]
            if item:
                found.add(item.split(".", 1)[0].lower())
        return found

    wanted, unwanted = names(attributes), names(excluded)
    if wanted:
        return {k: v for k, v in document.items() if k in ALWAYS_RETURNED or k.lower() in wanted}
    if unwanted:
        return {k: v for k, v in document.items() if k in ALWAYS_RETURNED or k.lower() not in unwanted}
    return document


def lookup_id(value):
    """Return *value* as a primary key, or None when it cannot be one (an unknown id, for SCIM)."""
    value = str(value)
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def visible_users():
    """Return the people SCIM shows: all but those it deleted."""
    return User.objects.exclude(provisioning__deleted_at__isnull=False)


class ScimUser(SCIMUser):
    """A Django user as a SCIM User."""

    id_field = "pk"

    def __init__(self, obj, request=None):
        super().__init__(obj, request=request)
        self.was_active = obj.is_active if obj.pk else True
        self.external_id = None
        self.deleted = False

    @property
    def record(self):
        try:
            return self.obj.provisioning
        except ProvisionedUser.DoesNotExist:
            return None

    def to_dict(self):
        user, record = self.obj, self.record
        document = {
            "schemas": [USER_SCHEMA],
            "id": str(user.pk),
            "userName": user.username,
            "active": user.is_active,
            "groups": [
                {"value": str(g.pk), "$ref": self._group_location(g), "display": g.name}
                for g in user.groups.order_by("pk")
            ],
            "meta": {
                "resourceType": "User",
                "created": user.date_joined.isoformat(),
                "lastModified": (record.updated_at if record else user.date_joined).isoformat(),
                "location": self.location,
            },
        }
        # Unassigned values are left out (RFC 7643, section 2.5).
        name = {k: v for k, v in (("givenName", user.first_name), ("familyName", user.last_name)) if v}
        if name:
            document["name"] = name
        if user.email:
            document["emails"] = [{"value": user.email}]
        if record and record.external_id:
            document["externalId"] = record.external_id
        return document

    def _group_location(self, group):
        return _location(self.request, "scim:groups", group.pk)

    @classmethod
    def resource_type_dict(cls, request=None):
        return _resource_type(request, "User", "Users", USER_SCHEMA, _("A person who may hold tokens."))

    def validate_dict(self, d):
        """Validation happens in from_dict, which reads every value it keeps."""

    def from_dict(self, d):
        """Set the user from a full SCIM User (POST, PUT, or a PATCHed document); raise ScimError."""
        _check_schemas(d, USER_SCHEMA)
        user = self.obj
        username = _text(d, "userName", required=True)
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError:
            raise ScimError(
                400, _("userName may hold letters, digits and @ . + - _ only."), "invalidValue"
            ) from None
        name = _object(d, "name")
        emails = _list(d, "emails")
        for entry in emails:
            address = entry.get("value")
            if not isinstance(address, str) or len(address) > 254:
                raise ScimError(400, _("An e-mail address must be text."), "invalidValue")
            try:
                validate_email(address)
            except ValidationError:
                raise ScimError(400, _("The e-mail address is not valid."), "invalidValue") from None
        # One address is kept: the primary one, else the last sent (a PATCH that adds one adds it last).
        primary = [e["value"] for e in emails if e.get("primary") is True]
        email = (primary or [e["value"] for e in emails] or [""])[-1]
        active = _active(d)
        self.external_id = _text(d, "externalId", max_length=EXTERNAL_ID_MAX_LENGTH)
        user.username = username
        user.first_name = _text(name, "givenName")
        user.last_name = _text(name, "familyName")
        user.email = email
        if active is not None:
            user.is_active = active
        if not user.pk:
            # People provisioned here sign in through the provider: no password of their own.
            user.set_unusable_password()

    def save(self):
        user = self.obj
        # userName is case-insensitive in SCIM (RFC 7643, section 4.1.1): "Carol" and "carol" are one person,
        # and a second account for them would be a duplicate, never a link.
        if User.objects.filter(username__iexact=user.username).exclude(pk=user.pk).exists():
            raise ScimError(409, _("Another person has this userName."), "uniqueness")
        try:
            with transaction.atomic():
                # Only the columns SCIM owns: a stale copy must never write back staff, superuser or a
                # password that an administrator changed meanwhile.
                user.save(update_fields=SCIM_USER_FIELDS if user.pk else None)
                user.provisioning = ProvisionedUser.record(
                    user,
                    external_id=self.external_id,
                    provider=self.request.user,
                    was_active=self.was_active,
                    deleted=self.deleted,
                )
        except IntegrityError:
            raise ScimError(409, _("Another person has this userName."), "uniqueness") from None
        self.was_active = user.is_active

    def delete(self):
        """Deactivate the person and hide them from SCIM; nothing of theirs is erased."""
        self.external_id = self.record.external_id if self.record else ""
        self.obj.is_active = False
        self.deleted = True
        with transaction.atomic():
            self.obj.save(update_fields=["is_active"])
            self.obj.provisioning = ProvisionedUser.record(
                self.obj,
                external_id=self.external_id,
                provider=self.request.user,
                was_active=self.was_active,
                deleted=True,
            )


class ScimGroup(SCIMGroup):
    """A Django group as a SCIM Group."""

    id_field = "pk"

    def __init__(self, obj, request=None):
        super().__init__(obj, request=request)
        self.external_id = None
        self.member_ids = None

    @property
    def record(self):
        try:
            return self.obj.provisioning
        except ProvisionedGroup.DoesNotExist:
            return None

    def to_dict(self):
        group, record = self.obj, self.record
        document = {
            "schemas": [GROUP_SCHEMA],
            "id": str(group.pk),
            "displayName": group.name,
            "members": [
                {"value": str(u.pk), "$ref": self._user_location(u)}
                for u in visible_users().filter(groups=group).order_by("pk")
            ],
            "meta": {"resourceType": "Group", "location": self.location},
        }
        if record:
            document["meta"]["lastModified"] = record.updated_at.isoformat()
            if record.external_id:
                document["externalId"] = record.external_id
        return document

    def _user_location(self, user):
        return _location(self.request, "scim:users", user.pk)

    @classmethod
    def resource_type_dict(cls, request=None):
        return _resource_type(request, "Group", "Groups", GROUP_SCHEMA, _("A group of people."))

    def validate_dict(self, d):
        """Validation happens in from_dict, which reads every value it keeps."""

    def from_dict(self, d):
        """Set the group from a full SCIM Group; raise ScimError."""
        _check_schemas(d, GROUP_SCHEMA)
        self.obj.name = _text(d, "displayName", required=True)
        self.external_id = _text(d, "externalId", max_length=EXTERNAL_ID_MAX_LENGTH)
        ids = set()
        for member in _list(d, "members"):
            pk = lookup_id(member.get("value", ""))
            if pk is None:
                raise ScimError(400, _("A member's value must be the id of a User."), "invalidValue")
            ids.add(pk)
        found = set(visible_users().filter(pk__in=ids).values_list("pk", flat=True))
        if found != ids:
            raise ScimError(400, _("A member is not a known User."), "invalidValue")
        self.member_ids = ids

    def save(self):
        group = self.obj
        if Group.objects.filter(name=group.name).exclude(pk=group.pk).exists():
            raise ScimError(409, _("Another group has this displayName."), "uniqueness")
        try:
            with transaction.atomic():
                group.save()
                group.provisioning, _created = ProvisionedGroup.objects.update_or_create(
                    group=group,
                    defaults={"external_id": self.external_id or "", "updated_at": timezone.now()},
                )
                if self.member_ids is not None:
                    # Only the people SCIM shows are members it sets; those it deleted keep their rows.
                    hidden = group.user_set.exclude(pk__in=visible_users().values("pk"))
                    group.user_set.set([*self.member_ids, *hidden.values_list("pk", flat=True)])
        except IntegrityError:
            raise ScimError(409, _("Another group has this displayName."), "uniqueness") from None

    def delete(self):
        """Delete the group: its members lose what it gave them, and so do their tokens."""
        self.obj.delete()
