"""gunicorn's logs without credentials: every URL, header and message through ``portal.redaction``.

The access log writes every request line, query string and referrer; an operator may add headers to its
format; the error log may quote a request line it could not read. ``gunicorn.conf.py`` (read by gunicorn
from the project folder) selects this logger.
"""

from gunicorn.glogging import Logger

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

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if _header_name(name) in CREDENTIAL_HEADERS:
                atoms[name] = REDACTED
            elif isinstance(value, str):
                atoms[name] = redact(value)
        return atoms
