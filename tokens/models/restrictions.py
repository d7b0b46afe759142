"""Least privilege: a token's access level, narrowed permissions and client address allow-list.

The rules live here once: ``Token.objects.issue`` and ``Token.set_restrictions`` call these cleaners,
and the pages, the API, the admin and ``create_token`` all go through those two. The request-time
checks (``address_allowed``) are here too, so the hot path and the validation agree on what an
entry means. So is the rule that a credential never grants more than it holds (``check_grant``),
which ``issue``, ``set_restrictions`` and ``rotate`` apply to the credential making the call.
"""

import ipaddress
import json
from dataclasses import dataclass
from functools import lru_cache

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.translation import gettext_lazy as _

from ..constants import ALLOWED_IP_MAX_LENGTH, MAX_ALLOWED_IPS, PERMISSION_MAX_LENGTH, Access


def clean_access(access):
    """Return *access* if it is a known level, or raise ValidationError({"access": …})."""
    if not isinstance(access, str) or access not in Access.values:
        raise ValidationError({"access": _("Use “read” or “read_write”.")})
    return access


def owner_permissions(user):
    """Return the set of "app_label.codename" *user* holds now, read from the database.

    A fresh instance: a permission cache left on *user* by an earlier ``has_perm`` must not decide
    what may be granted.
    """
    fresh = get_user_model().objects.get(pk=user.pk)
    return fresh.get_all_permissions() if fresh.is_active else set()


def clean_permissions(user, permissions):
    """Return *permissions* sorted and without repeats, None (inherit all), or raise ValidationError.

    Each entry is "app_label.codename" and must be held by *user* now: nobody can give a token what
    its owner does not have, whoever is doing the giving.
    """
    if permissions is None:
        return None
    if not isinstance(permissions, (list, tuple)):
        raise ValidationError(
            {"permissions": _("Use a list of “app_label.codename” strings, or null for all.")}
        )
    errors = []
    wanted = set()
    for entry in permissions:
        if (
            not isinstance(entry, str)
            or len(entry) > PERMISSION_MAX_LENGTH
            or not entry.isascii()
            or not entry.isprintable()
            or entry.count(".") < 1
        ):
            errors.append(_("Each permission is a string “app_label.codename”."))
            break
        wanted.add(entry)
    if not errors:
        missing = sorted(wanted - owner_permissions(user))
        if missing:
            errors.append(
                _("The owner does not hold: %(perms)s. A token cannot have more than its owner.")
                % {"perms": ", ".join(missing[:10])}
            )
    if errors:
        raise ValidationError({"permissions": errors})
    return sorted(wanted)


def _normalise_address(entry):
    """Return *entry* as a canonical address or network string, or raise ValueError with a reason."""
    if not isinstance(entry, str):
        raise ValueError(_("Each entry is a string."))
    text = entry.strip()
    # ipaddress accepts IPv6 zone ids ("fe80::1%eth0"); a zone never reaches us in a client address.
    plain = text.isascii() and text.isprintable()
    if not plain:
        # Not echoed: control characters, bidi overrides or surrogates have no place in a message.
        raise ValueError(_("An entry contains characters no address or network has."))
    not_one = _("“%(entry)s” is not an IPv4 or IPv6 address or network.") % {"entry": text[:60]}
    if not text or len(text) > ALLOWED_IP_MAX_LENGTH or "%" in text:
        raise ValueError(not_one)
    try:
        if "/" not in text:
            return str(ipaddress.ip_address(text))
        network = ipaddress.ip_network(text)
    except ValueError as error:
        if "host bits set" in str(error):
            suggestion = ipaddress.ip_network(text, strict=False)
            raise ValueError(
                _("“%(entry)s” has bits set after the prefix; did you mean %(net)s?")
                % {"entry": text, "net": suggestion}
            ) from None
        raise ValueError(not_one) from None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def clean_allowed_ips(entries):
    """Return *entries* as canonical addresses or networks without repeats, or raise ValidationError.

    ``[]`` means anywhere. At most MAX_ALLOWED_IPS entries.
    """
    if entries is None:
        return []
    if not isinstance(entries, (list, tuple)):
        raise ValidationError({"allowed_ips": _("Use a list of addresses or networks; [] for anywhere.")})
    errors = []
    cleaned = []
    for entry in entries[: MAX_ALLOWED_IPS * 2]:
        try:
            value = _normalise_address(entry)
        except ValueError as reason:
            errors.append(str(reason))
            continue
        if value not in cleaned:
            cleaned.append(value)
    if len(entries) > MAX_ALLOWED_IPS * 2 or len(cleaned) > MAX_ALLOWED_IPS:
        errors.append(_("Use at most %(n)d addresses or networks.") % {"n": MAX_ALLOWED_IPS})
    if errors:
        raise ValidationError({"allowed_ips": errors[:10]})
    return cleaned


@lru_cache(maxsize=1024)
def _networks(entries):
    return tuple(ipaddress.ip_network(entry) for entry in entries)


def load_list(value):
    """Return a JSON list column as read by a raw cursor (text on SQLite and PostgreSQL), or None."""
    if value is None or isinstance(value, list):
        return value
    return json.loads(value)


def address_allowed(allowed_ips, address):
    """Return whether client *address* is inside one of *allowed_ips* (``[]``: anywhere)."""
    if not allowed_ips:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except (TypeError, ValueError):
        # No usable address (no REMOTE_ADDR): an allow-list cannot be satisfied.
        return False
    candidates = [ip]
    # An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d; an IPv4 entry covers it.
    if ip.version == 6 and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    networks = _networks(tuple(allowed_ips))
    return any(candidate in network for candidate in candidates for network in networks)


def permission_choices(user):
    """Return the owner's permissions as grouped form choices: [(app name, [(perm, "Can …")])]."""
    held = owner_permissions(user)
    groups = {}
    for perm in Permission.objects.select_related("content_type").order_by(
        "content_type__app_label", "content_type__model", "codename"
    ):
        key = f"{perm.content_type.app_label}.{perm.codename}"
        if key in held:
            groups.setdefault(_app_name(perm.content_type.app_label), []).append((key, perm.name))
    return list(groups.items())


def _app_name(app_label):
    try:
        return str(apps.get_app_config(app_label).verbose_name)
    except LookupError:
        return app_label


def permission_names(permissions):
    """Return {"app_label.codename": "Can …"} for *permissions*, in words for people."""
    if not permissions:
        return {}
    names = {}
    codenames = {p.split(".", 1)[1] for p in permissions}
    for perm in Permission.objects.select_related("content_type").filter(codename__in=codenames):
        key = f"{perm.content_type.app_label}.{perm.codename}"
        if key in permissions:
            names[key] = perm.name
    return {p: names.get(p, p) for p in permissions}


def describe_change(field, old, new):
    """Return the Activity Stream detail for a change of *field* from *old* to *new* (≤ 255 characters)."""
    if field == "access":
        text = f"{Access(old).label} → {Access(new).label}"
    elif field == "permissions":

        def words(value):
            return str(_("all of the owner's")) if value is None else (", ".join(value) or str(_("none")))

        text = f"{words(old)} → {words(new)}"
    else:

        def words(value):
            return ", ".join(value) or str(_("anywhere"))

        text = f"{words(old)} → {words(new)}"
    return text if len(text) <= 255 else text[:254] + "…"


# set_restrictions() and check_grant(): a field left out keeps its value.
UNCHANGED = object()


class ExceedsCaller(PermissionDenied):
    """The credential making a request asked for more than it may give: ``detail`` says what."""

    def __init__(self, detail):
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """What a credential may do: its access, permissions (None: all of the owner's) and addresses."""

    access: str = Access.READ_WRITE
    permissions: tuple | list | None = None
    allowed_ips: tuple | list = ()

    @classmethod
    def of(cls, holder):
        """Return the limits of *holder*: anything with ``access``, ``permissions`` and ``allowed_ips``."""
        return cls(holder.access, holder.permissions, tuple(holder.allowed_ips or ()))

    def covers(self, field, value):
        """Return whether a token limited to *value* for *field* can do no more than these limits allow."""
        if field == "access":
            return self.access == Access.READ_WRITE or value == Access.READ
        if field == "permissions":
            return self.permissions is None or (value is not None and set(value) <= set(self.permissions))
        if not self.allowed_ips:
            return True
        # [] is anywhere: wider than any allow-list. Each entry must lie inside one of ours, same family.
        return bool(value) and all(_inside(entry, self.allowed_ips) for entry in value)


def _inside(entry, allowed_ips):
    network = ipaddress.ip_network(entry)
    return any(
        network.version == outer.version and network.subnet_of(outer)
        for outer in _networks(tuple(allowed_ips))
    )


GRANT_REFUSALS = {
    "access": _("read and write access only from a read and write token"),
    "permissions": _("permissions only as a list within the calling token's own, never all of the owner's"),
    "allowed_ips": _("addresses only as a non-empty allow-list inside the calling token's own"),
}


def check_grant(caller, *, current=None, **given):
    """Raise ExceedsCaller unless the token that *given* makes lies within what *caller* holds.

    *caller* is the credential making the request (``request.auth``), or None for a person: the
    owner's browser session, an administrator or a command, who may give whatever the owner holds
    (the cleaners check that). A token, even a leaked one, never hands out more than it has itself:
    not to a token it creates or rotates, not to itself, not to a sibling. *given* are the new
    limits (UNCHANGED: kept); *current* the token's limits before a change. A change that only
    narrows the token is always allowed: it grants nothing. Any other must leave the whole token,
    fields not given included, within the caller's limits: a token cannot lift a restriction from
    a token that can do more than it can.
    """
    if caller is None:
        return
    held = Limits.of(caller)
    changed = {field: value for field, value in given.items() if value is not UNCHANGED}
    if current is not None:
        before = Limits.of(current)
        if all(before.covers(field, value) for field, value in changed.items()):
            return
        changed = {
            "access": before.access,
            "permissions": before.permissions,
            "allowed_ips": before.allowed_ips,
            **changed,
        }
    beyond = [field for field, value in changed.items() if not held.covers(field, value)]
    if beyond:
        raise ExceedsCaller(
            _("A token cannot grant more than it holds itself: it may give %(what)s.")
            % {"what": "; ".join(str(GRANT_REFUSALS[field]) for field in beyond)}
        )
