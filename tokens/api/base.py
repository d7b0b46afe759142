"""What every API view shares: the ``api_view`` wrapper, the ``BadRequest`` it answers, the JSON body.

Authentication has happened before a view runs (ApiAuthenticationMiddleware); these shape the rest of
the answer the same way on every endpoint.
"""

import json
from functools import wraps

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from ..errors import api_error, forbidden
from ..models import Token

MAX_BODY_BYTES = 16 * 1024
JSON = "application/json"


class BadRequest(Exception):
    """Answer the request with *status* (400 unless told) and *detail*; a 400 names the wrong *fields*."""

    def __init__(self, detail, fields=None, status=400):
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or {}
        self.status = status


def api_view(methods):
    """Wrap a view: allowed methods, never stored by a cache, and BadRequest/ValidationError as 400 JSON."""

    def decorate(view):
        @require_http_methods(methods)
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                response = view(request, *args, **kwargs)
            except BadRequest as error:
                extra = {"fields": error.fields} if error.status == 400 else {}
                response = api_error(error.status, error.detail, **extra)
            except ValidationError as error:
                response = api_error(400, _("The request has invalid fields."), fields=_fields(error))
            except Token.ExceedsCaller as refusal:
                # The credential asked for more than it holds, or for what only a person may do.
                response = forbidden(request, refusal.detail)
            # Every answer is the caller's own data: no cache may store it. Set outright, not with
            # never_cache, which parses and merges headers on every API request for the same effect.
            response.setdefault("Cache-Control", "no-store")
            return response

        return wrapped

    return decorate


def _fields(error):
    if hasattr(error, "message_dict"):
        return {
            ("non_field_errors" if k == "__all__" else k): [str(m) for m in v]
            for k, v in error.message_dict.items()
        }
    return {"non_field_errors": [str(m) for m in error.messages]}


def too_large(request, limit):
    """Return True when the declared or actual body is over *limit* bytes (the declared one is read first)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    return declared > limit or len(request.body) > limit


def parse_json(raw):
    """Return the JSON value of the bytes *raw*, or raise BadRequest: the one parser of the API's bodies."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(_("The body is not valid JSON.")) from None
    except RecursionError:
        # A few kilobytes of "[[[[…" nest deeper than the parser's stack: no field of ours nests at all.
        raise BadRequest(_("The body nests too deeply.")) from None


def json_body(request, allowed=None, required=(), *, limit=MAX_BODY_BYTES):
    """Return the request's JSON body, or raise BadRequest (415 not JSON, 413 over *limit* bytes, 400).

    With *allowed*, the body must be an object with only those keys and every *required* one; without
    it, any JSON value is returned for the view to check.
    """
    if request.content_type != JSON:
        raise BadRequest(_("Send the body as JSON with Content-Type: application/json."), status=415)
    if too_large(request, limit):
        raise BadRequest(_("The body is too large."), status=413)
    body = parse_json(request.body)
    if allowed is None:
        return body
    if not isinstance(body, dict):
        raise BadRequest(_("The body must be a JSON object."))
    fields = {key: [_("Unknown field.")] for key in body if key not in allowed}
    fields.update({key: [_("This field is required.")] for key in required if key not in body})
    for key in ("name", "purpose"):
        if key in body and not isinstance(body[key], str) and not (key == "purpose" and body[key] is None):
            fields[key] = [_("Must be a string.")]
    if fields:
        raise BadRequest(_("The request has invalid fields."), fields)
    return body
