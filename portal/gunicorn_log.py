"""gunicorn's logs without credentials, as text or as JSON lines (LOG_FORMAT=json).

Every URL, header and message goes through ``portal.redaction``: the access log writes every request
line, query string and referrer; an operator may add headers to its format; the error log may quote a
request line it could not read. With ``LOG_FORMAT=json`` both of gunicorn's logs write one JSON object a
line (``portal/logs.py``); the access line is built from the same atoms as the text line, after their
redaction, so whatever redacts a URL for one format redacts it for the other. ``gunicorn.conf.py`` (read
by gunicorn from the project folder) selects this logger.
"""

from gunicorn.glogging import Logger

# The settings module itself, not django.conf: the master sets up its logs before Django is.
from . import settings
from .logs import ENVIRON_CLIENT, ENVIRON_REQUEST_ID, ENVIRON_TOKEN_ID, ENVIRON_USER_ID, json_formatter
from .redaction import CREDENTIAL_HEADERS, REDACTED, RedactFilter, redact


def _header_name(atom):
    # Request headers are atoms "{name}i"; the environment's are "{http_name}e".
    if atom.startswith("{") and atom.endswith("}i"):
        return atom[1:-2]
    if atom.startswith("{http_") and atom.endswith("}e"):
        return atom[6:-2].replace("_", "-")
    return None


class RedactingLogger(Logger):
    """gunicorn's Logger with credentials replaced by ``[redacted]`` in the access and error logs."""

    def setup(self, cfg):
        super().setup(cfg)
        self.error_log.addFilter(RedactFilter())
        if settings.LOG_FORMAT == "json":
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(json_formatter())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if _header_name(name) in CREDENTIAL_HEADERS:
                atoms[name] = REDACTED
            elif isinstance(value, str):
                atoms[name] = redact(value)
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
