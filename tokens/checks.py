"""System checks: refuse to start with peppers that would make digests weak or ambiguous.

The rules live in ``credentials.pepper_problems``; portal/settings.py applies the same ones at startup.
"""

from django.conf import settings
from django.core.checks import Error, register

from .credentials import PEPPER_HINT, pepper_problems


@register()
def check_peppers(app_configs, **kwargs):
    peppers = getattr(settings, "TOKEN_PEPPERS", None) or {}
    return [
        Error(f"TOKEN_PEPPERS: {sentence}.", hint=PEPPER_HINT, id=f"tokens.{check_id}")
        for check_id, sentence in pepper_problems(peppers)
    ]


# The order the middleware relies on: each entry must come after the one before it.
MIDDLEWARE_ORDER = (
    # Its process_exception must see database errors from everything after it (fail closed).
    "tokens.middleware.DatabaseUnavailableMiddleware",
    # The API middleware replaces the session user that AuthenticationMiddleware sets.
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tokens.middleware.ApiAuthenticationMiddleware",
)


@register()
def check_middleware_order(app_configs, **kwargs):
    """Refuse a MIDDLEWARE list that leaves out or reorders what the API authentication relies on."""
    middleware = list(settings.MIDDLEWARE)
    missing = [name for name in MIDDLEWARE_ORDER if name not in middleware]
    if missing:
        return [
            Error(
                f"MIDDLEWARE lacks {', '.join(missing)}.",
                hint="Add it in this order: " + ", then ".join(MIDDLEWARE_ORDER) + ".",
                id="tokens.E010",
            )
        ]
    positions = [middleware.index(name) for name in MIDDLEWARE_ORDER]
    if positions != sorted(positions):
        return [
            Error(
                "MIDDLEWARE has the portal's middleware in the wrong order.",
                hint="Keep this order: " + ", then ".join(MIDDLEWARE_ORDER) + ".",
                id="tokens.E011",
            )
        ]
    return []
