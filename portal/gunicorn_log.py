"""gunicorn's logs: reset-link tokens redacted from the access log, and JSON lines with LOG_FORMAT=json.

A reset link carries its token in the path (``/accounts/reset/<uid>/<token>/``, Django's URL), and
the access log writes every request line and referrer. Anyone who reads the log could open a link
the owner has not used yet. ``gunicorn.conf.py`` (read by gunicorn from the project folder) selects
this logger.

With ``LOG_FORMAT=json`` both of gunicorn's logs write one JSON object a line (``portal/logs.py``). The
access line is built from the same atoms as the text line, after their redaction, so whatever redacts a
URL for one format redacts it for the other.
"""

import re

from gunicorn.glogging import Logger

# The settings module itself, not django.conf: the master sets up its logs before Django is.
from . import settings
from .logs import ENVIRON_CLIENT, ENVIRON_REQUEST_ID, ENVIRON_TOKEN_ID, ENVIRON_USER_ID, json_formatter

_RESET_TOKEN = re.compile(r"(/reset/[^/\s?#]+/)[^/\s?#]+")
# Request line, path, query, referrer: every atom that can hold a URL.
_URL_ATOMS = ("r", "U", "q", "f")


class RedactingLogger(Logger):
    """gunicorn's Logger with reset tokens replaced by ``[redacted]`` in the access log."""

    def setup(self, cfg):
        super().setup(cfg)
        if settings.LOG_FORMAT == "json":
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(json_formatter())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in _URL_ATOMS:
            if isinstance(atoms.get(name), str):
                atoms[name] = _RESET_TOKEN.sub(r"\1[redacted]", atoms[name])
        return atoms

    def access(self, resp, req, environ, request_time):
        if settings.LOG_FORMAT != "json":
            return super().access(resp, req, environ, request_time)
        if not self.access_log.handlers:  # no --access-logfile: no access log
            return None
        atoms = self.atoms(resp, req, environ, request_time)
        # The path without its query (atom U), where a client may put anything; the JSON encoder
        # escapes what the path itself holds.
        fields = {
            "request_id": environ.get(ENVIRON_REQUEST_ID),
            "method": atoms["m"],
            "path": atoms["U"],
            "status": resp.status_code,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_id": environ.get(ENVIRON_USER_ID),
            "token_id": environ.get(ENVIRON_TOKEN_ID),
            "client": environ.get(ENVIRON_CLIENT) or atoms["h"],
        }
        self.access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)
        return None
