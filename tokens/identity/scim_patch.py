"""SCIM PATCH (RFC 7644, section 3.5.2) applied to a resource's JSON document, and request bodies read safely.

Pure: no database. A PATCH is applied to the resource as SCIM shows it, and the result goes through the
same validation as a PUT (tokens/identity/scim.py), so there is one rule for what a resource may hold.
Every malformed input raises ScimError with the status and ``scimType`` RFC 7644 gives it.
"""

import json
import re

from django.utils.translation import gettext as _

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Limits on what a body may be: far above what any provider sends, far below what costs the server.
MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = 16
MAX_OPERATIONS = 1000
MAX_INTEGER = 2**63 - 1
# Common attributes only the service provider sets (RFC 7643, section 3.1).
READ_ONLY = ("id", "meta", "schemas")

# attr, or attr.sub, or attr[filter], or attr[filter].sub; the filter: one "sub eq value" comparison.
_PATH = re.compile(
    r"""(?P<attr>[A-Za-z][\w$-]*)
        (?:\[\s*(?P<fattr>[A-Za-z][\w$-]*)\s+eq\s+(?P<fvalue>"(?:[^"\\]|\\.)*"|true|false|null|-?\d+)\s*\])?
        (?:\.(?P<sub>[A-Za-z][\w$-]*))?""",
    re.VERBOSE,
)


class ScimError(Exception):
    """Refuse a SCIM request with RFC 7644's error body (section 3.12)."""

    def __init__(self, status, detail, scim_type=None):
        super().__init__(detail)
        self.status = status
        self.detail = str(detail)
        self.scim_type = scim_type

    def to_dict(self):
        body = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


def load_body(raw):
    """Return the JSON object in *raw* (bytes), or raise ScimError(400 invalidSyntax / 413)."""
    if len(raw) > MAX_BODY_BYTES:
        raise ScimError(413, _("The body is too large."))
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers bad JSON and integers too long to read; RecursionError deeply nested arrays.
        raise ScimError(400, _("The body is not valid JSON."), "invalidSyntax") from None
    if not isinstance(document, dict):
        raise ScimError(400, _("The body must be a JSON object."), "invalidSyntax")
    _check_values(document, 0)
    return document


def _no_constant(name):
    raise ValueError(name)  # NaN, Infinity: not JSON


def _check_values(value, depth):
    # The database stores text as UTF-8 (PostgreSQL refuses NUL), and integers in 64 bits: anything else
    # is refused here, with SCIM's error, rather than failing as it is written.
    if depth > MAX_DEPTH:
        raise ScimError(400, _("The body is nested too deeply."), "invalidSyntax")
    if isinstance(value, str):
        if "\x00" in value or not _encodable(value):
            raise ScimError(400, _("The body holds text that is not valid Unicode."), "invalidValue")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ScimError(400, _("The body holds a number too large."), "invalidValue")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def _encodable(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800), which JSON can spell
        return False
    return True


def apply_patch(document, body, *, attributes, schema):
    """Apply the PatchOp *body* to *document* (a resource as SCIM shows it) and return it.

    *attributes* maps each attribute's lower-case name to its spelling; *schema* is the resource's core
    schema URN, which a path may carry as a prefix.
    """
    if body.get("schemas") != [PATCH_SCHEMA]:
        detail = _("A PATCH body must have the schema %(s)s.") % {"s": PATCH_SCHEMA}
        raise ScimError(400, detail, "invalidSyntax")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not operations:
        raise ScimError(400, _("A PATCH body needs a list of Operations."), "invalidSyntax")
    if len(operations) > MAX_OPERATIONS:
        raise ScimError(400, _("Too many operations in one PATCH."), "tooMany")
    for operation in operations:
        if not isinstance(operation, dict):
            raise ScimError(400, _("Each operation must be an object."), "invalidSyntax")
        op = operation.get("op")
        if not isinstance(op, str) or op.lower() not in ("add", "replace", "remove"):
            raise ScimError(400, _("An operation's op must be add, replace or remove."), "invalidSyntax")
        path = operation.get("path")
        if path is not None and not isinstance(path, str):
            raise ScimError(400, _("An operation's path must be text."), "invalidPath")
        _apply(document, op.lower(), path, operation.get("value"), attributes, schema)
    return document


def _apply(document, op, path, value, attributes, schema):
    if not path:
        if op == "remove":
            raise ScimError(400, _("A remove operation needs a path."), "noTarget")
        if not isinstance(value, dict):
            detail = _("An operation without a path needs an object as its value.")
            raise ScimError(400, detail, "invalidValue")
        for key, item in value.items():
            if key in READ_ONLY:
                # Okta repeats the resource's id in a replace's value: harmless while it is unchanged.
                if item != document.get(key):
                    raise ScimError(400, _("%(name)s cannot be changed.") % {"name": key}, "mutability")
                continue
            _apply(document, op, key, item, attributes, schema)
        return
    if path.lower().startswith(schema.lower() + ":"):
        path = path[len(schema) + 1 :]
    match = _PATH.fullmatch(path.strip())
    if match is None:
        raise ScimError(400, _("The path %(path)s cannot be read.") % {"path": path}, "invalidPath")
    attr = attributes.get(match["attr"].lower())
    if attr is None:
        raise ScimError(400, _("The path %(path)s names no attribute.") % {"path": path}, "invalidPath")
    sub = match["sub"]
    if match["fattr"] is not None:
        _apply_filtered(document, op, attr, match, value)
    elif sub is not None:
        parent = document.get(attr)
        if not isinstance(parent, dict):
            if op == "remove":
                return
            parent = document[attr] = {}
        key = _key(parent, sub)
        if op == "remove":
            parent.pop(key, None)
        else:
            parent[key] = value
    elif op == "remove":
        if isinstance(value, list) and isinstance(document.get(attr), list):
            # Remove the listed values of a multi-valued attribute ({"value": …} items), as Entra ID sends.
            gone = {str(item.get("value")) for item in value if isinstance(item, dict)}
            document[attr] = [
                i for i in document[attr] if not (isinstance(i, dict) and str(i.get("value")) in gone)
            ]
        else:
            document.pop(attr, None)
    elif op == "add" and isinstance(document.get(attr), list):
        items = value if isinstance(value, list) else [value]
        document[attr] = document[attr] + items
    elif op == "add" and isinstance(document.get(attr), dict) and isinstance(value, dict):
        document[attr] = {**document[attr], **value}
    else:
        document[attr] = value


def _apply_filtered(document, op, attr, match, value):
    items = document.get(attr)
    if not isinstance(items, list):
        items = []
    wanted = json.loads(match["fvalue"])
    fattr, sub = match["fattr"], match["sub"]

    def selected(item):
        return isinstance(item, dict) and _equal(item.get(_key(item, fattr)), wanted)

    chosen = [item for item in items if selected(item)]
    if op == "remove":
        if sub is None:
            document[attr] = [item for item in items if not selected(item)]
        else:
            for item in chosen:
                item.pop(_key(item, sub), None)
        return
    if not chosen:
        if op == "replace" and sub is None:
            raise ScimError(400, _("No value matches the path's filter."), "noTarget")
        # e.g. emails[type eq "work"].value on a person without a work address: make that address.
        chosen = [{fattr: wanted}]
        items = [*items, chosen[0]]
    for item in chosen:
        if sub is None:
            if not isinstance(value, dict):
                raise ScimError(400, _("The value must be an object."), "invalidValue")
            item.update(value)
        else:
            item[_key(item, sub)] = value
    document[attr] = items


def _key(mapping, name):
    # Attribute names are case-insensitive (RFC 7643, section 2.1).
    return next((k for k in mapping if k.lower() == name.lower()), name)


def _equal(value, wanted):
    if isinstance(value, str) and isinstance(wanted, str):
        return value.lower() == wanted.lower()
    return value == wanted
