"""GitHub secret scanning (partner program): verify a request's signature against the configured keys.

GitHub signs the raw request body with ECDSA over P-256 and SHA-256 and sends the base64 of the
DER-encoded signature in ``Github-Public-Key-Signature`` and the id of its key in
``Github-Public-Key-Identifier``. Its public keys are published as
``{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}``; the portal does not fetch
them itself (it may have no way out to the internet), so the administrator saves that document to
the file named by the ``GITHUB_SECRET_SCANNING_KEYS`` setting. Verification uses the
``cryptography`` package; nothing here touches the database.
"""

import base64
import binascii
import hashlib
import json
import logging

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.conf import settings

log = logging.getLogger(__name__)

KEY_ID_HEADER = "HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"
SIGNATURE_HEADER = "HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"
# A DER ECDSA P-256 signature is at most 72 bytes (96 in base64); anything far longer is not one.
MAX_SIGNATURE_LENGTH = 200


class KeysUnavailable(Exception):
    """The keys file is not configured, missing or not in GitHub's format."""


def load_keys(path=None):
    """Return {key_identifier: public key} from the keys file (GitHub's format), or raise KeysUnavailable.

    Read on every call: GitHub calls rarely, and a replaced file takes effect at once on every worker.
    """
    path = path or settings.GITHUB_SECRET_SCANNING_KEYS
    if not path:
        raise KeysUnavailable("GITHUB_SECRET_SCANNING_KEYS is not set")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        keys = {}
        for entry in document["public_keys"]:
            key = load_pem_public_key(entry["key"].encode("ascii"))
            # Only the algorithm GitHub signs with: an RSA or other-curve key is a configuration mistake.
            if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
                keys[str(entry["key_identifier"])] = key
    except (OSError, ValueError, KeyError, TypeError, UnsupportedAlgorithm) as error:
        raise KeysUnavailable(f"{path}: {type(error).__name__}") from None
    if not keys:
        raise KeysUnavailable(f"{path}: no ECDSA P-256 public key")
    return keys


def verify(body, *, key_id, signature, keys):
    """Return True if *signature* (base64 DER) is a valid signature of the bytes *body* by key *key_id*."""
    key = keys.get(key_id or "")
    if key is None or not signature or len(signature) > MAX_SIGNATURE_LENGTH:
        return False
    try:
        der = base64.b64decode(signature.encode("ascii"), validate=True)
        key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, UnicodeEncodeError, binascii.Error):
        return False
    return True


def verify_request(request):
    """Return True if *request* carries a valid GitHub signature over its raw body."""
    try:
        keys = load_keys()
    except KeysUnavailable as error:
        log.error("github secret scanning keys unavailable: %s", error)
        return False
    return verify(
        request.body,
        key_id=request.META.get(KEY_ID_HEADER, "").strip(),
        signature=request.META.get(SIGNATURE_HEADER, "").strip(),
        keys=keys,
    )


def token_hash(value):
    """Return the SHA-256 hex digest GitHub uses to refer to a reported value in the answer."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
