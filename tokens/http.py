"""Request and response helpers the pages, the API and the admin share.

What a request says about its sender (the client address, believed from trusted proxies only), the
owner-scoped token lookup, and the headers of a response that carries a token value.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils.cache import patch_cache_control

from .models import ServiceAccount, Token


def own_token_or_404(request, pk):
    """Return the signed-in user's token *pk*; anything else is a 404, like an id that does not exist."""
    tokens = Token.objects.for_user(request.user).select_related("revoked_by", "replaced_by", "replaces")
    return get_object_or_404(tokens, pk=pk)


def managed_token_or_404(request, pk):
    """Return token *pk* if the signed-in person manages it (theirs, or a service account's they manage).

    The pages' lookup: a token of anyone else is a 404, like an id that does not exist.
    """
    tokens = Token.objects.manageable_by(request.user).select_related(
        "user__service_account__team", "revoked_by", "replaced_by", "replaces"
    )
    return get_object_or_404(tokens, pk=pk)


def managed_account_or_404(request, pk):
    """Return service account *pk* if the signed-in person manages it now; anything else is a 404."""
    accounts = ServiceAccount.objects.managed_by(request.user).select_related("user", "team")
    return get_object_or_404(accounts, pk=pk)


def service_account_of(owned):
    """Return the service account owning *owned* (a token or a trust policy), or None.

    Load ``user__service_account`` with it (``managed_token_or_404`` does) to spare a query.
    """
    return getattr(owned.user, "service_account", None)


def no_store(response):
    """Mark *response*, which shows a token value, as never to be stored by any cache or the browser."""
    patch_cache_control(response, no_store=True, no_cache=True, private=True, max_age=0)
    response["Pragma"] = "no-cache"
    return response


@lru_cache(maxsize=1)
def _trusted_networks():
    return tuple(ipaddress.ip_network(p, strict=False) for p in settings.TRUSTED_PROXIES)


def _trusted(address):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # An IPv4 proxy seen through a dual-stack socket arrives as ::ffff:a.b.c.d; an IPv4 entry covers it,
    # as it does in token allow-lists. Missing it would make the proxy itself everyone's client address.
    candidates = (ip, ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped else (ip,)
    return any(candidate in network for candidate in candidates for network in _trusted_networks())


def from_trusted_proxy(request):
    """Return True when the direct peer is one of TRUSTED_PROXIES, whose word about the client we believe."""
    remote = request.META.get("REMOTE_ADDR")
    return bool(remote and settings.TRUSTED_PROXIES and _trusted(remote))


def client_ip(request):
    """Return the client's IP: the direct peer, unless it is a trusted proxy.

    Behind trusted proxies the X-Forwarded-For chain is read from the right, skipping trusted hops;
    the first untrusted address is the client. A header sent by an untrusted peer is ignored.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    if not remote or not settings.TRUSTED_PROXIES or not _trusted(remote):
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote
    return remote


# A site is usually given a whole /64, so one IPv6 client holds more addresses than any limit can count.
IPV6_CLIENT_PREFIX = 64


def limited_address(address):
    """Return the client *address* as every per-address limit counts it: IPv6 clients by their /64.

    An IPv4-mapped address counts as its IPv4 address; an IPv4 address as itself; anything unreadable
    (or None) as ``"unknown"``, one shared count.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def forget_cached_settings(*, setting, **kwargs):
    """Drop the parsed TRUSTED_PROXIES when the setting changes (``setting_changed``, in tests)."""
    if setting == "TRUSTED_PROXIES":
        _trusted_networks.cache_clear()
