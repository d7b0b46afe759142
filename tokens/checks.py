"""System checks: refuse to start with peppers that would make digests weak or ambiguous."""

from django.conf import settings
from django.core.checks import Error, register

MIN_PEPPER_LENGTH = 32


@register()
def check_peppers(app_configs, **kwargs):
    peppers = getattr(settings, "TOKEN_PEPPERS", None)
    if not peppers:
        return [Error("TOKEN_PEPPERS is empty.", hint="Set TOKEN_PEPPERS=1=<at least 32 random characters>.",
                      id="tokens.E001")]
    errors = []
    for pid, value in peppers.items():
        if not str(pid).isdigit() or not 0 < int(pid) < 32768:
            errors.append(Error(f"TOKEN_PEPPERS id {pid!r} is not a whole number from 1 to 32767.",
                                hint="Write TOKEN_PEPPERS as id=value pairs, e.g. 1=…,2=….", id="tokens.E002"))
        if len(str(value)) < MIN_PEPPER_LENGTH:
            # Never print the value itself.
            errors.append(Error(f"TOKEN_PEPPERS id {pid} is shorter than {MIN_PEPPER_LENGTH} characters.",
                                hint="Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                                id="tokens.E003"))
    return errors


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
        return [Error(f"MIDDLEWARE lacks {', '.join(missing)}.",
                      hint="Add it in this order: " + ", then ".join(MIDDLEWARE_ORDER) + ".", id="tokens.E010")]
    positions = [middleware.index(name) for name in MIDDLEWARE_ORDER]
    if positions != sorted(positions):
        return [Error("MIDDLEWARE has the portal's middleware in the wrong order.",
                      hint="Keep this order: " + ", then ".join(MIDDLEWARE_ORDER) + ".", id="tokens.E011")]
    return []
