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
