"""Token-shaped values out of every log line: the access log, gunicorn's error log and Django's loggers.

A client may put a credential anywhere in a URL: a token pasted into the admin's search box
(``/admin/tokens/token/?q=bpt_…``), ``?access_token=`` as some OAuth clients send it, a legacy key as
``?api_key=``, a password-reset link's token in its path. Each is a working credential to whoever reads
the log, so every line is redacted before it is written:

* anything shaped like a bearer token (``bpt_`` and the letters and digits after it, also when the
  underscore is percent-encoded), wherever it stands;
* the value of a query or form parameter whose name says it holds a credential (legacy keys have no
  shape of their own: this is where they can be recognised);
* the token part of a password-reset link (``/reset/<uid>/<token>/``);
* the headers that carry credentials (``Authorization``, ``Rest-Api-Key``, ``Cookie``), whole.
"""

import logging
import re

REDACTED = "[redacted]"

_TOKEN_SHAPED = re.compile(r"bpt(?:_|%5[fF])[0-9A-Za-z]+")
_CREDENTIAL_PARAMETER = re.compile(
    r"(?P<name>(?:^|[?&;\s])(?:access_token|refresh_token|id_token|token|api_key|apikey|api-key|"
    r"rest_api_key|rest-api-key|key|secret|client_secret|password|code)=)[^&;#\s\"']*",
    re.IGNORECASE,
)
_RESET_LINK = re.compile(r"(/reset/[^/\s?#]+/)[^/\s?#]+")
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "rest-api-key", "cookie"})


def redact(text):
    """Return *text* with every token-shaped value and credential parameter replaced by ``[redacted]``."""
    text = _TOKEN_SHAPED.sub(REDACTED, text)
    text = _CREDENTIAL_PARAMETER.sub(rf"\g<name>{REDACTED}", text)
    return _RESET_LINK.sub(rf"\g<1>{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """Format a record as usual, then redact the whole line: message, arguments and traceback.

    The record itself is left as it is, so other handlers (the test suite's secret scan among them) still
    see what the code logged; only what is written is redacted. A traceback repeats the exception's
    message (Django's DisallowedHost quotes the Host header), so it is redacted with the line.
    """

    def format(self, record):
        return redact(super().format(record))


class RedactFilter(logging.Filter):
    """Redact each record's message and traceback in place (gunicorn's error log, in its own process)."""

    _formatter = logging.Formatter()

    def filter(self, record):
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self._formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
