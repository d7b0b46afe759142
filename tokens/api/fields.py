"""The API's token object: one list of its fields, read by the views, the OpenAPI document and tests."""

from operator import attrgetter


def iso(moment):
    """Return *moment* in ISO 8601 (with its UTC offset), or None."""
    return moment.isoformat() if moment else None


def _pk(instance):
    return None if instance is None else instance.pk


# Each field and how it is read from a token, in the order the API shows them. Metadata only: the
# value and the digest are never among them.
TOKEN_FIELDS = {
    "id": attrgetter("pk"),
    "name": attrgetter("name"),
    "purpose": attrgetter("purpose"),
    "status": attrgetter("status"),
    "created_at": lambda token: iso(token.created_at),
    "expires_at": lambda token: iso(token.expires_at),
    # A rotation whose overlap is over revoked the token at its end.
    "revoked_at": lambda token: iso(token.ended_at),
    "last_used_at": lambda token: iso(token.last_used_at),
    "last_used_ip": attrgetter("last_used_ip"),
    "last_used_user_agent": attrgetter("last_used_user_agent"),
    "request_count": attrgetter("request_count"),
    "last_characters": attrgetter("last_characters"),
    "access": attrgetter("access"),
    "permissions": attrgetter("permissions"),
    "allowed_ips": attrgetter("allowed_ips"),
    "alerts": attrgetter("alerts"),
    # Rotation: the token this one replaced, the one that replaced it, when this value stops.
    "replaces": attrgetter("replaces_id"),
    "replaced_by": lambda token: _pk(token.replaced_by_token),
    "rotation_ends_at": lambda token: iso(token.rotation_ends_at),
}


def token_json(token):
    """Return the public shape of *token*: the fields of TOKEN_FIELDS, never the value or the digest."""
    return {field: read(token) for field, read in TOKEN_FIELDS.items()}
