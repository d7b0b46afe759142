"""gunicorn's access log, without the secret part of password-reset links.

A reset link carries its token in the path (``/accounts/reset/<uid>/<token>/``, Django's URL), and
the access log writes every request line and referrer. Anyone who reads the log could open a link
the owner has not used yet. ``gunicorn.conf.py`` (read by gunicorn from the project folder) selects
this logger.
"""

import re

from gunicorn.glogging import Logger

_RESET_TOKEN = re.compile(r"(/reset/[^/\s?#]+/)[^/\s?#]+")
# Request line, path, query, referrer: every atom that can hold a URL.
_URL_ATOMS = ("r", "U", "q", "f")


class RedactingLogger(Logger):
    """gunicorn's Logger with reset tokens replaced by ``[redacted]`` in the access log."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in _URL_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = _RESET_TOKEN.sub(r"\1[redacted]", atoms[name])
        return atoms
