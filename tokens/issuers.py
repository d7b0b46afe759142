"""Which OpenID Connect issuers a CI job's token may come from: pure rules, no database.

``portal/settings.py`` checks ``OIDC_FEDERATION_ISSUERS`` with them at start-up, and the exchange
(tokens/exchange.py) checks an issuer's discovery document with the same rule before it fetches keys.
"""

import ipaddress
from urllib.parse import urlsplit

# Offered by name in the trust policy form; any other allowed issuer is shown by its URL.
KNOWN_ISSUERS = {
    "https://token.actions.githubusercontent.com": "GitHub Actions",
    "https://gitlab.com": "GitLab.com",
}


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url):
    """Return why *url* cannot name an issuer or its keys, or None when it can.

    HTTPS only: keys fetched over plain HTTP could be swapped by anyone on the path, and with them any
    job's identity. Plain HTTP is accepted for loopback addresses only, where nobody is on the path
    (a local test issuer).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a URL"
    if not host:
        return "is not a URL with a host"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not carry credentials, a query or a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _loopback(host):
        return None
    return "must use https:// (plain http:// only on a loopback address)"


def issuer_label(issuer):
    """Return the name people know *issuer* by (GitHub Actions, GitLab.com), else its URL."""
    return KNOWN_ISSUERS.get(issuer, issuer)
