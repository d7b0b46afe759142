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
