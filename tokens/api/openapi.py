"""The OpenAPI 3.1 description of /api/, served at /api/openapi.json and checked by tests/test_openapi.py."""

from ..constants import MAX_ALLOWED_IPS, NAME_MAX_LENGTH, PURPOSE_MAX_LENGTH, Access
from ..models import TokenEvent, TokenStatus

TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema):
    return {"application/json": {"schema": schema}}


def _error(description):
    return {"description": description, "content": _json(_ref("Error"))}


ERRORS = {
    "400": {"description": "Invalid input; nothing was changed.", "content": _json(_ref("ValidationError"))},
    "401": _error("Missing, malformed, unknown, expired or revoked credentials (RFC 6750 challenge)."),
    "403": _error(
        "Authenticated, but refused: the token lacks the permission, or is read-only and the method writes "
        '(`insufficient_scope`, with `WWW-Authenticate: Bearer realm="api", error="insufficient_scope"` '
        'and `scope="write"` for the access case), or the token may not be used from the client\'s address '
        "(`ip_not_allowed`, the detail names the address seen). Recorded as a refused use."
    ),
    "404": _error("No such object among the caller's own (other users' ids answer the same)."),
    "405": _error("Method not allowed."),
    "413": _error("The body is too large."),
    "415": _error("The body is not JSON."),
    "429": {
        "description": (
            "Too many failed authentications from this client address (API_FAILURES_PER_ADDRESS, "
            "30 a minute unless set otherwise); Retry-After says when to try again. Valid credentials "
            "never count."
        ),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
        "content": _json(_ref("Error")),
    },
    "503": _error("The database cannot be reached; nothing was done."),
}


def _responses(ok_code, ok, *codes):
    responses = {ok_code: ok}
    # 403 everywhere: any token may be bound to addresses, and a read-only one is refused every write.
    responses.update({code: ERRORS[code] for code in ("401", "403", "405", "429", "503", *codes)})
    return responses


def _page(item):
    return {
        "type": "object",
        "required": ["count", "next", "previous", "results"],
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "next": {"type": ["string", "null"]},
            "previous": {"type": ["string", "null"]},
            "results": {"type": "array", "items": item},
        },
    }


PAGE_PARAMETERS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
]
ID_PARAMETER = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}

ACCESS = {
    "enum": list(Access.values),
    "description": "`read`: GET, HEAD and OPTIONS only. `read_write`: every method.",
}
PERMISSIONS = {
    "type": ["array", "null"],
    "items": {"type": "string", "pattern": "^[^.]+[.].+$"},
    "description": (
        "null: all of the owner's permissions. Otherwise `app_label.codename` strings, each held by the "
        "owner when set; at each request the token has those the owner still holds."
    ),
}
ALLOWED_IPS = {
    "type": "array",
    "maxItems": MAX_ALLOWED_IPS,
    "items": {"type": "string", "description": "An IPv4 or IPv6 address or CIDR network."},
    "description": "[]: any address. Otherwise requests from elsewhere get 403 `ip_not_allowed`.",
}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "ValidationError": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "email", "first_name", "last_name", "is_staff"],
        "properties": {
            "id": {"type": "integer"},
            "username": {"type": "string"},
            "email": {"type": "string"},
            "first_name": {"type": "string"},
            "last_name": {"type": "string"},
            "is_staff": {"type": "boolean"},
        },
    },
    "Me": {
        "allOf": [
            _ref("User"),
            {
                "type": "object",
                "required": ["auth"],
                "properties": {
                    "auth": {
                        "type": "object",
                        "required": ["method", "token_id", "access"],
                        "properties": {
                            "method": {"enum": ["bearer", "legacy_key", "session"]},
                            "token_id": {"type": ["integer", "null"]},
                            "legacy_key_id": {"type": ["integer", "null"]},
                            "access": ACCESS,
                        },
                    }
                },
            },
        ]
    },
    "Token": {
        "type": "object",
        "required": [
            "id",
            "name",
            "purpose",
            "status",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "last_used_ip",
            "last_used_user_agent",
            "request_count",
            "last_characters",
            "access",
            "permissions",
            "allowed_ips",
            "alerts",
            "replaces",
            "replaced_by",
            "rotation_ends_at",
        ],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "maxLength": NAME_MAX_LENGTH},
            "purpose": {"type": "string"},
            "status": {
                "enum": TokenStatus.values,
                "description": "`rotating`: replaced, and the value still works until `rotation_ends_at`.",
            },
            "created_at": TIME,
            "expires_at": {**NULLABLE_TIME, "description": "null: the token never expires."},
            "revoked_at": {
                **NULLABLE_TIME,
                "description": "When it was revoked, or when its rotation's overlap ended.",
            },
            "last_used_at": NULLABLE_TIME,
            "last_used_ip": {"type": ["string", "null"]},
            "last_used_user_agent": {"type": "string"},
            "request_count": {"type": "integer", "minimum": 0},
            "last_characters": {"type": "string", "description": "The value's last 4 characters."},
            "access": ACCESS,
            "permissions": PERMISSIONS,
            "allowed_ips": ALLOWED_IPS,
            "alerts": {"type": "boolean", "description": "Mail the owner on use from a new client address."},
            "replaces": {"type": ["integer", "null"], "description": "The id of the token it replaced."},
            "replaced_by": {"type": ["integer", "null"], "description": "The id of the token replacing it."},
            "rotation_ends_at": {
                **NULLABLE_TIME,
                "description": "After a rotation: when this value stops working (the end of the overlap).",
            },
        },
    },
    "NewToken": {
        "allOf": [
            _ref("Token"),
            {
                "type": "object",
                "required": ["token"],
                "properties": {
                    "token": {"type": "string", "description": "The value. Shown this once only."}
                },
            },
        ]
    },
    "TokenCreate": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH},
            "purpose": {"type": ["string", "null"], "maxLength": PURPOSE_MAX_LENGTH},
            "expires_at": {
                **NULLABLE_TIME,
                "description": (
                    "Omitted: the policy's default lifetime. null: no expiry, where the policy allows it."
                ),
            },
            "access": {**ACCESS, "description": "Omitted: the policy's default access."},
            "permissions": {**PERMISSIONS, "description": "Omitted or null: all of the owner's permissions."},
            "allowed_ips": {**ALLOWED_IPS, "description": "Omitted or []: any address."},
        },
    },
    "TokenRotate": {
        "type": "object",
        "additionalProperties": False,
        "description": "An empty body, or none at all: no overlap and the same lifetime as the old token.",
        "properties": {
            "overlap": {
                "type": "integer",
                "minimum": 0,
                "description": (
                    "Seconds the old value keeps working (default 0: it stops at once), at most the "
                    "policy's longest overlap (7 days unless changed)."
                ),
            },
            "expires_at": {
                **NULLABLE_TIME,
                "description": (
                    "Omitted: the old token's lifetime from now, within the policy. null: no expiry, where "
                    "the policy allows it."
                ),
            },
        },
    },
    "TokenUpdate": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "description": "Any of the fields; those left out keep their value. A bad field changes nothing.",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH},
            "access": ACCESS,
            "permissions": PERMISSIONS,
            "allowed_ips": ALLOWED_IPS,
            "alerts": {"type": "boolean", "description": "false mutes the token's new-address alerts."},
        },
    },
    "LeakReport": {
        "type": "object",
        "required": ["credentials"],
        "additionalProperties": False,
        "properties": {
            "credentials": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {"type": "string", "minLength": 1, "maxLength": 1000},
                "description": "Bearer tokens and legacy API keys that were found where they should not be.",
            },
            "source": {"type": ["string", "null"], "description": "Who or what found them."},
            "url": {"type": ["string", "null"], "description": "Where they were found."},
        },
    },
    "LeakReportReceived": {
        "type": "object",
        "required": ["received"],
        "properties": {"received": {"type": "integer", "minimum": 1}},
    },
    "GitHubMatch": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "type": {"type": "string"},
            "url": {"type": "string"},
            "source": {"type": "string"},
        },
    },
    "GitHubLabel": {
        "type": "object",
        "required": ["token_hash", "token_type", "label"],
        "properties": {
            "token_hash": {"type": "string", "description": "SHA-256 of the reported value, hex."},
            "token_type": {"type": "string"},
            "label": {"enum": ["true_positive", "false_positive"]},
        },
    },
    "EventUser": {
        "type": ["object", "null"],
        "required": ["id", "username"],
        "properties": {"id": {"type": "integer"}, "username": {"type": "string"}},
    },
    "Event": {
        "type": "object",
        "required": ["id", "at", "kind", "user", "actor", "token_id", "legacy_key_id", "ip", "detail"],
        "properties": {
            "id": {"type": "integer"},
            "at": TIME,
            "kind": {"enum": TokenEvent.Kind.values},
            "user": _ref("EventUser"),
            "actor": _ref("EventUser"),
            "token_id": {"type": ["integer", "null"]},
            "legacy_key_id": {"type": ["integer", "null"]},
            "ip": {"type": ["string", "null"]},
            "detail": {"type": "string"},
        },
    },
    "EventPage": {
        "type": "object",
        "required": ["results", "next"],
        "properties": {
            "results": {"type": "array", "items": _ref("Event")},
            "next": {
                "type": ["string", "null"],
                "description": "null: caught up; poll again with after=<last id>.",
            },
        },
    },
    "UsageRecord": {
        "type": "object",
        "required": ["at", "method", "path", "status", "accepted", "ip", "user_agent", "duration_ms"],
        "properties": {
            "at": TIME,
            "method": {"type": "string"},
            "path": {"type": "string"},
            "status": {"type": "integer"},
            "accepted": {"type": "boolean"},
            "ip": {"type": ["string", "null"]},
            "user_agent": {"type": "string"},
            "duration_ms": {"type": "number"},
        },
    },
    "Usage": {
        "allOf": [
            _page(_ref("UsageRecord")),
            {
                "type": "object",
                "required": ["request_count", "last_used_at", "daily", "client_ips"],
                "properties": {
                    "request_count": {"type": "integer"},
                    "last_used_at": NULLABLE_TIME,
                    "daily": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["date", "accepted", "refused"],
                            "properties": {
                                "date": {"type": "string", "format": "date"},
                                "accepted": {"type": "integer"},
                                "refused": {"type": "integer"},
                            },
                        },
                    },
                    "client_ips": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ip", "requests", "first_seen", "last_seen"],
                            "properties": {
                                "ip": {"type": "string"},
                                "requests": {"type": "integer"},
                                "first_seen": TIME,
                                "last_seen": TIME,
                            },
                        },
                    },
                },
            },
        ]
    },
    "IntrospectionRequest": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string", "description": "The bearer token value asked about."},
            "token_type_hint": {"type": "string", "description": "Allowed (RFC 7662), not used."},
        },
    },
    "Introspection": {
        "description": (
            "RFC 7662, section 2.2. Anything not active (unknown, malformed, revoked, expired, a deactivated "
            'owner, a legacy key, a token bound to addresses) is `{"active": false}` and nothing more.'
        ),
        "oneOf": [
            {
                "type": "object",
                "required": ["active"],
                "additionalProperties": False,
                "properties": {"active": {"const": False}},
            },
            {
                "type": "object",
                "required": ["active", "scope", "username", "sub", "token_type", "iat", "jti"],
                "additionalProperties": False,
                "properties": {
                    "active": {"const": True},
                    "scope": {"enum": ["read", "read write"], "description": "From the token's access."},
                    "username": {"type": "string"},
                    "sub": {"type": "string", "description": "The owner's user id."},
                    "token_type": {"const": "Bearer"},
                    "exp": {"type": "integer", "description": "Expiry, Unix time; absent: never expires."},
                    "iat": {"type": "integer", "description": "Creation, Unix time."},
                    "jti": {"type": "string", "description": "The token's id."},
                },
            },
        ],
    },
}

ROTATE_RESPONSES = _responses(
    "201",
    {
        "description": (
            "Rotated. The new token, with its value in `token` this once and the old id in `replaces`. "
            "The old token is `rotating` until its `rotation_ends_at`, then revoked."
        ),
        "content": _json(_ref("NewToken")),
    },
    "400",
    "404",
) | {
    "409": _error(
        "Only an active token can be rotated (this one is rotating, expired or revoked); nothing was created."
    ),
    "413": _error("The body is too large."),
    "415": _error("The body is not JSON."),
}
ROTATE_BODY = {"required": False, "content": _json(_ref("TokenRotate"))}

PATHS = {
    "/api/users/me": {
        "get": {
            "operationId": "users_me",
            "summary": "The caller, and how it authenticated.",
            "responses": _responses("200", {"description": "The caller.", "content": _json(_ref("Me"))}),
        }
    },
    "/api/users": {
        "get": {
            "operationId": "users_list",
            "summary": "All users. Needs the owner's auth.view_user permission.",
            "parameters": PAGE_PARAMETERS,
            "responses": _responses(
                "200",
                {"description": "A page of users.", "content": _json(_page(_ref("User")))},
                "400",
                "403",
                "404",
            ),
        }
    },
    "/api/users/{id}": {
        "get": {
            "operationId": "users_detail",
            "summary": "One user. Needs the owner's auth.view_user permission.",
            "parameters": [ID_PARAMETER],
            "responses": _responses(
                "200", {"description": "The user.", "content": _json(_ref("User"))}, "403", "404"
            ),
        }
    },
    "/api/tokens": {
        "get": {
            "operationId": "tokens_list",
            "summary": "The caller's tokens, newest first.",
            "parameters": [
                *PAGE_PARAMETERS,
                {"name": "status", "in": "query", "schema": {"enum": TokenStatus.values}},
            ],
            "responses": _responses(
                "200",
                {"description": "A page of tokens.", "content": _json(_page(_ref("Token")))},
                "400",
                "404",
            ),
        },
        "post": {
            "operationId": "tokens_create",
            "summary": (
                "Create a token. Needs a signed-in session unless the policy lets bearer tokens create."
            ),
            "requestBody": {"required": True, "content": _json(_ref("TokenCreate"))},
            "responses": _responses(
                "201",
                {
                    "description": "Created. The value is in `token`, this once.",
                    "content": _json(_ref("NewToken")),
                },
                "400",
                "403",
            )
            | {"413": _error("The body is too large."), "415": _error("The body is not JSON.")},
        },
    },
    "/api/tokens/{id}": {
        "parameters": [ID_PARAMETER],
        "get": {
            "operationId": "tokens_detail",
            "summary": "One of the caller's tokens.",
            "responses": _responses(
                "200", {"description": "The token.", "content": _json(_ref("Token"))}, "404"
            ),
        },
        "patch": {
            "operationId": "tokens_rename",  # kept from before PATCH took more than the name
            "summary": (
                "Rename a token, change its access, permissions or allowed addresses, or mute or unmute "
                "its new-address alerts. The value never changes."
            ),
            "requestBody": {"required": True, "content": _json(_ref("TokenUpdate"))},
            "responses": _responses(
                "200", {"description": "Changed.", "content": _json(_ref("Token"))}, "400", "404"
            )
            | {"413": _error("The body is too large."), "415": _error("The body is not JSON.")},
        },
        "delete": {
            "operationId": "tokens_revoke",
            "summary": "Revoke a token, from the very next request on. Revoking twice is harmless.",
            "responses": _responses("204", {"description": "Revoked."}, "404"),
        },
    },
    "/api/tokens/{id}/rotate": {
        "post": {
            "operationId": "tokens_rotate",
            "summary": (
                "Rotate one of the caller's tokens: a new value with the same name, purpose, access, "
                "permissions and allowed addresses. Needs a signed-in session unless the policy lets "
                "bearer tokens create."
            ),
            "parameters": [ID_PARAMETER],
            "requestBody": ROTATE_BODY,
            "responses": ROTATE_RESPONSES,
        }
    },
    "/api/tokens/self/rotate": {
        "post": {
            "operationId": "tokens_self_rotate",
            "summary": (
                "Rotate the bearer token making this call (needs read and write access and the policy's "
                "self-rotation switch). Recorded with the caller's address and mailed to the owner."
            ),
            "requestBody": ROTATE_BODY,
            "responses": ROTATE_RESPONSES,
        }
    },
    "/api/tokens/{id}/usage": {
        "get": {
            "operationId": "tokens_usage",
            "summary": "A token's usage: totals, 30 days of daily counts, client IPs, recent requests.",
            "parameters": [ID_PARAMETER, *PAGE_PARAMETERS],
            "responses": _responses(
                "200", {"description": "Usage.", "content": _json(_ref("Usage"))}, "400", "404"
            ),
        }
    },
    "/api/credentials/revoke": {
        "post": {
            "operationId": "credentials_revoke",
            "summary": "Report leaked credentials. Active ones are revoked and their owners mailed.",
            "description": (
                "No authentication: any credential sent along is ignored. The answer is the same for "
                "real, revoked and made-up values. Limited per client address (LEAK_REPORTS_PER_ADDRESS, "
                "30 in 10 minutes unless set otherwise)."
            ),
            "security": [],
            "requestBody": {"required": True, "content": _json(_ref("LeakReport"))},
            "responses": {
                "202": {"description": "Received.", "content": _json(_ref("LeakReportReceived"))},
                **{code: ERRORS[code] for code in ("400", "405", "413", "415", "503")},
                "429": {
                    **ERRORS["429"],
                    "description": "Too many reports from this client address; Retry-After says when.",
                },
            },
        }
    },
    "/api/secret-scanning/github": {
        "post": {
            "operationId": "github_secret_scanning",
            "summary": "GitHub secret scanning: verify, revoke true positives, label each match.",
            "description": (
                "Signed by GitHub: `Github-Public-Key-Identifier` and `Github-Public-Key-Signature` (ECDSA "
                "P-256, SHA-256, base64 DER over the raw body), checked against GITHUB_SECRET_SCANNING_KEYS. "
                "Any credential sent along is ignored."
            ),
            "security": [],
            "parameters": [
                {"name": "Github-Public-Key-Identifier", "in": "header", "schema": {"type": "string"}},
                {"name": "Github-Public-Key-Signature", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": _json({"type": "array", "maxItems": 1000, "items": _ref("GitHubMatch")}),
            },
            "responses": {
                "200": {
                    "description": "One label per match, in order.",
                    "content": _json({"type": "array", "items": _ref("GitHubLabel")}),
                },
                "401": _error("Missing or bad signature; nothing was changed."),
                **{code: ERRORS[code] for code in ("400", "405", "413", "503")},
            },
        }
    },
    "/api/events": {
        "get": {
            "operationId": "events_feed",
            "summary": "Every user's token events after a cursor, oldest first (tokens.view_tokenevent).",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": _responses(
                "200", {"description": "Events.", "content": _json(_ref("EventPage"))}, "400", "403"
            ),
        }
    },
    "/api/introspect": {
        "post": {
            "operationId": "introspect",
            "summary": (
                "RFC 7662 token introspection. The caller's bearer token must belong to an owner holding "
                "tokens.introspect_token (and not be narrowed away from it). Recorded as a use of the token "
                "asked about."
            ),
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": _ref("IntrospectionRequest")}},
            },
            "responses": _responses(
                "200",
                {"description": "Whether the token is active.", "content": _json(_ref("Introspection"))},
                "400",
            )
            | {"413": _error("The body is too large."), "415": _error("The body is not a form.")},
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document. Any credential sent along is ignored.",
            "security": [],
            "responses": {
                "200": {"description": "The OpenAPI document.", "content": _json({"type": "object"})}
            },
        }
    },
}


def _stated(name, description):
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


FORWARD_AUTH_HEADERS = {
    name: {"required": True, "schema": {"type": "string"}, "description": description}
    for name, description in (
        ("X-Auth-User-Id", "The owner's user id."),
        ("X-Auth-Username", "The owner's username, percent-encoded UTF-8 where not plain ASCII."),
        ("X-Auth-Token-Id", "The token's id; empty for a legacy key."),
        ("X-Auth-Method", "`bearer` or `legacy_key`."),
        ("X-Auth-Access", "`read` or `read_write`."),
    )
}
FORWARD_AUTH_OPERATION = {
    "summary": (
        "Forward authentication for reverse proxies (nginx auth_request, Traefik ForwardAuth, Caddy "
        "forward_auth, Envoy ext_authz, which may call /forward-auth/<original path>): the API's own bearer "
        "and legacy-key checks, access and allow-lists included, applied to the original request as a "
        "trusted proxy states it. Each call is recorded as a use with the original method and path. "
        "See docs/gateways.md."
    ),
    "parameters": [
        _stated("X-Original-Method", "The original method (nginx). Believed from TRUSTED_PROXIES only."),
        _stated("X-Original-URI", "The original URI (nginx). Believed from TRUSTED_PROXIES only."),
        _stated("X-Forwarded-Method", "The original method (Traefik, Caddy). From TRUSTED_PROXIES only."),
        _stated("X-Forwarded-Uri", "The original URI (Traefik, Caddy). From TRUSTED_PROXIES only."),
        _stated("X-Forwarded-For", "The client address chain, read from the right past trusted proxies."),
        {
            "name": "permission",
            "in": "query",
            "required": False,
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
            "description": "`app_label.codename` the route needs of the token (owner's, as narrowed).",
        },
    ],
    "responses": {
        "200": {
            "description": "Allowed; the headers tell the upstream who calls.",
            "headers": FORWARD_AUTH_HEADERS,
        },
        "401": ERRORS["401"],
        "403": ERRORS["403"],
        "429": ERRORS["429"],
        "503": ERRORS["503"],
    },
}
PATHS["/forward-auth"] = {
    method: {**FORWARD_AUTH_OPERATION, "operationId": f"forward_auth_{method}"}
    # Any method is answered (the original one, from Envoy); these are the ones clients use.
    for method in ("get", "post", "put", "patch", "delete")
}


def document(request=None):
    """Return the OpenAPI 3.1 document as a dict."""
    server = request.build_absolute_uri("/").rstrip("/") if request else "/"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bearer-token portal API",
            "version": "1",
            "description": (
                "Authenticate with `Authorization: Bearer <token>`. Deprecated: `Rest-Api-Key: <key>` until "
                "the sunset announced in the `Sunset` header. A signed-in browser session may also call the "
                "API. "
                "Every response to a token in its rotation overlap carries `Deprecation: @<rotation time>`, "
                '`Sunset: <end of the overlap>` and `Link: <its page>; rel="deprecation"`.'
            ),
        },
        "servers": [{"url": server}],
        "security": [{"bearer": []}, {"legacyKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "legacyKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Rest-Api-Key",
                    "description": "Deprecated; see the migration guide.",
                },
            },
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }
