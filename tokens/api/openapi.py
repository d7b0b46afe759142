"""The OpenAPI 3.1 description of /api/, served at /api/openapi.json and checked by tests/test_openapi.py."""

from ..constants import MAX_ALLOWED_IPS, NAME_MAX_LENGTH, PURPOSE_MAX_LENGTH, Access, Method
from ..models import TokenEvent, TokenStatus
from .fields import TOKEN_FIELDS

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
                            "method": {"enum": Method.values},
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
        "required": list(TOKEN_FIELDS),
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
            "alerts": {
                "type": "boolean",
                "description": "false mutes the token's new-address alerts (the owner's session only).",
            },
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
                "its new-address alerts. The value never changes. With a bearer token, new limits must "
                "lie within the calling token's own unless they only narrow (403 insufficient_scope "
                "otherwise), and muting needs the owner's session."
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


# Keyless CI: trust policies (a signed-in session only) and the RFC 8693 token exchange (docs/ci.md).
OAUTH_ERROR = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {
        "error": {
            "enum": [
                "invalid_request",
                "invalid_grant",
                "unsupported_grant_type",
                "unsupported_token_type",
                "invalid_target",
                "too_many_requests",
                "temporarily_unavailable",
            ]
        },
        "error_description": {"type": "string"},
    },
}
TRUST_POLICY_FIELDS = {
    "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH},
    "issuer": {
        "type": "string",
        "description": "One of OIDC_FEDERATION_ISSUERS, as the jobs' `iss` spells it.",
    },
    "audience": {
        "type": "string",
        "maxLength": 255,
        "description": "The `aud` the job's token must carry; default: the portal's SITE_URL.",
    },
    "conditions": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": (
            "{claim: exact value or glob (*, ?, [...])}; every one must hold. One of repository, "
            "repository_id, project_path, project_id must be given, not starting with a wildcard."
        ),
    },
    "access": ACCESS,
    "permissions": PERMISSIONS,
    "allowed_ips": ALLOWED_IPS,
    "token_lifetime": {
        "type": "integer",
        "minimum": 60,
        "maximum": 3600,
        "description": "Seconds each minted token lives (default 900), within the site policy's lifetimes.",
    },
    "max_live_tokens": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "Exchanges are refused while this many minted tokens work (default 10).",
    },
}
SCHEMAS.update(
    {
        "TrustPolicy": {
            "type": "object",
            "required": [*TRUST_POLICY_FIELDS, "id", "issuer_name", "created_at", "last_exchange_at"],
            "properties": {
                "id": {"type": "integer"},
                **TRUST_POLICY_FIELDS,
                "issuer_name": {"type": "string", "description": "GitHub Actions, GitLab.com, or the URL."},
                "created_at": TIME,
                "last_exchange_at": NULLABLE_TIME,
            },
        },
        "TrustPolicyCreate": {
            "type": "object",
            "required": ["name", "issuer", "conditions"],
            "additionalProperties": False,
            "properties": TRUST_POLICY_FIELDS,
        },
        "TrustPolicyChange": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": TRUST_POLICY_FIELDS,
        },
        "TokenExchangeRequest": {
            "type": "object",
            "required": ["grant_type", "subject_token", "subject_token_type"],
            "properties": {
                "grant_type": {"const": "urn:ietf:params:oauth:grant-type:token-exchange"},
                "subject_token": {
                    "type": "string",
                    "description": "The CI job's OpenID Connect token (a JWT).",
                },
                "subject_token_type": {
                    "enum": [
                        "urn:ietf:params:oauth:token-type:jwt",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ]
                },
                "requested_token_type": {"const": "urn:ietf:params:oauth:token-type:access_token"},
                "audience": {"type": "string", "description": "If given, the portal's SITE_URL."},
                "resource": {"type": "string", "description": "If given, the portal's SITE_URL."},
            },
        },
        "TokenExchangeResponse": {
            "type": "object",
            "required": ["access_token", "issued_token_type", "token_type", "expires_in"],
            "additionalProperties": False,
            "properties": {
                "access_token": {
                    "type": "string",
                    "description": "A bearer token (`bpt_…`), shown this once.",
                },
                "issued_token_type": {"const": "urn:ietf:params:oauth:token-type:access_token"},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "minimum": 0, "description": "Seconds it still works."},
            },
        },
        "OAuthError": OAUTH_ERROR,
    }
)
SESSION_ONLY = {
    "403": _error("Called with a token or key: trust policies are managed from a signed-in session only.")
}
PATHS.update(
    {
        "/api/trust-policies": {
            "get": {
                "operationId": "trust_policies_list",
                "summary": "Your trust policies (keyless CI), oldest first.",
                "parameters": PAGE_PARAMETERS,
                "responses": _responses(
                    "200", {"description": "A page.", "content": _json(_page(_ref("TrustPolicy")))}, "400"
                )
                | SESSION_ONLY,
            },
            "post": {
                "operationId": "trust_policies_create",
                "summary": "Create a trust policy: which CI jobs may trade their token for one of yours.",
                "requestBody": {"required": True, "content": _json(_ref("TrustPolicyCreate"))},
                "responses": _responses(
                    "201",
                    {"description": "Created.", "content": _json(_ref("TrustPolicy"))},
                    "400",
                    "413",
                    "415",
                )
                | SESSION_ONLY,
            },
        },
        "/api/trust-policies/{id}": {
            "parameters": [ID_PARAMETER],
            "get": {
                "operationId": "trust_policies_read",
                "summary": "One of your trust policies.",
                "responses": _responses(
                    "200", {"description": "The policy.", "content": _json(_ref("TrustPolicy"))}, "404"
                )
                | SESSION_ONLY,
            },
            "patch": {
                "operationId": "trust_policies_update",
                "summary": "Change any of a trust policy's fields.",
                "requestBody": {"required": True, "content": _json(_ref("TrustPolicyChange"))},
                "responses": _responses(
                    "200",
                    {"description": "Changed.", "content": _json(_ref("TrustPolicy"))},
                    "400",
                    "404",
                    "413",
                    "415",
                )
                | SESSION_ONLY,
            },
            "delete": {
                "operationId": "trust_policies_delete",
                "summary": "Delete a trust policy; the tokens it minted that still work are revoked.",
                "responses": _responses("204", {"description": "Deleted."}, "404") | SESSION_ONLY,
            },
        },
        "/api/token-exchange": {
            "post": {
                "operationId": "token_exchange",
                "summary": "RFC 8693 token exchange: a CI job's OpenID Connect token for a short-lived one.",
                "description": (
                    "No other authentication: any Authorization or Rest-Api-Key header is ignored. The "
                    "job's token is checked (issuer allowed, signature with the issuer's published keys, "
                    "RS256 or ES256, aud, exp, nbf, iat with a minute's leeway, jti used once) and the "
                    "first trust policy whose conditions hold mints a token of its owner. Every refusal "
                    "is the same `invalid_grant`; the owner sees the reason. See docs/ci.md."
                ),
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": _ref("TokenExchangeRequest")}
                    },
                },
                "responses": {
                    "200": {"description": "Minted.", "content": _json(_ref("TokenExchangeResponse"))},
                    "400": {
                        "description": (
                            "RFC 6749 / RFC 8693 error: `invalid_request`, `unsupported_grant_type`, "
                            "`unsupported_token_type`, `invalid_target`, or `invalid_grant` for any refused "
                            "subject token."
                        ),
                        "content": _json(_ref("OAuthError")),
                    },
                    "405": ERRORS["405"],
                    "413": {"description": "The body is too large.", "content": _json(_ref("OAuthError"))},
                    "429": {
                        "description": "Too many refusals from this address; see Retry-After.",
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                        "content": _json(_ref("OAuthError")),
                    },
                    "503": {
                        "description": (
                            "`temporarily_unavailable`: the issuer's keys could not be fetched within "
                            "OIDC_FEDERATION_TIMEOUT, or the database is down."
                        ),
                        "content": _json({"oneOf": [_ref("OAuthError"), _ref("Error")]}),
                    },
                },
            }
        },
    }
)


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


# Service accounts: a manager's signed-in session only (a token or key gets 403), the tokens of /api/tokens.
SCHEMAS["ServiceAccount"] = {
    "type": "object",
    "required": ["id", "username", "description", "team", "is_active"],
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "description": {"type": "string"},
        "team": {"type": "string", "description": "The owning team (group) name."},
        "is_active": {"type": "boolean", "description": "False: deactivated; its tokens are refused."},
    },
}
ACCOUNT_PARAMETER = {**ID_PARAMETER, "name": "account"}
SESSION_ONLY = (
    " With the signed-in session of a manager of the account (a member of its team holding the manager "
    "role); a token or legacy key gets 403, anyone else 404. Events name the manager as the actor."
)


def _for_account(operation, operation_id, summary):
    """Return the /api/tokens *operation* as a service account's: same shapes, the manager's session."""
    return {
        **operation,
        "operationId": operation_id,
        "summary": summary + SESSION_ONLY,
        "security": [{"session": []}],
        "responses": operation["responses"] | {"404": ERRORS["404"]},
    }


PATHS["/api/service-accounts"] = {
    "get": {
        "operationId": "service_accounts_list",
        "summary": "The service accounts the signed-in person manages." + SESSION_ONLY,
        "security": [{"session": []}],
        "parameters": PAGE_PARAMETERS,
        "responses": _responses(
            "200",
            {"description": "A page of service accounts.", "content": _json(_page(_ref("ServiceAccount")))},
            "400",
            "404",
        ),
    }
}
PATHS["/api/service-accounts/{account}/tokens"] = {
    "parameters": [ACCOUNT_PARAMETER],
    "get": _for_account(
        PATHS["/api/tokens"]["get"], "service_account_tokens_list", "The account's tokens, newest first."
    ),
    "post": _for_account(
        PATHS["/api/tokens"]["post"],
        "service_account_tokens_create",
        "Create a token for the account; the value is in the 201, this once.",
    ),
}
PATHS["/api/service-accounts/{account}/tokens/{id}"] = {
    "parameters": [ACCOUNT_PARAMETER, ID_PARAMETER],
    "get": _for_account(
        PATHS["/api/tokens/{id}"]["get"], "service_account_tokens_detail", "One of its tokens."
    ),
    "patch": _for_account(
        PATHS["/api/tokens/{id}"]["patch"],
        "service_account_tokens_update",
        "Rename a token of the account, change its access, permissions or allowed addresses, or its alerts.",
    ),
    "delete": _for_account(
        PATHS["/api/tokens/{id}"]["delete"],
        "service_account_tokens_revoke",
        "Revoke a token of the account, from the very next request on.",
    ),
}
PATHS["/api/service-accounts/{account}/tokens/{id}/rotate"] = {
    "parameters": [ACCOUNT_PARAMETER],
    "post": _for_account(
        PATHS["/api/tokens/{id}/rotate"]["post"],
        "service_account_tokens_rotate",
        "Rotate a token of the account: a new value, the same settings; the old one works for the overlap.",
    ),
}


PATHS["/api/service-accounts/{account}/trust-policies"] = {
    "parameters": [ACCOUNT_PARAMETER],
    "get": _for_account(
        PATHS["/api/trust-policies"]["get"],
        "service_account_trust_policies_list",
        "The account's trust policies (keyless CI), oldest first.",
    ),
    "post": _for_account(
        PATHS["/api/trust-policies"]["post"],
        "service_account_trust_policies_create",
        "Create a trust policy for the account: which CI jobs may trade their token for one of its.",
    ),
}
PATHS["/api/service-accounts/{account}/trust-policies/{id}"] = {
    "parameters": [ACCOUNT_PARAMETER, ID_PARAMETER],
    "get": _for_account(
        PATHS["/api/trust-policies/{id}"]["get"],
        "service_account_trust_policies_read",
        "One of the account's trust policies.",
    ),
    "patch": _for_account(
        PATHS["/api/trust-policies/{id}"]["patch"],
        "service_account_trust_policies_update",
        "Change any of the fields of one of the account's trust policies.",
    ),
    "delete": _for_account(
        PATHS["/api/trust-policies/{id}"]["delete"],
        "service_account_trust_policies_delete",
        "Delete one of the account's trust policies; the tokens it minted that still work are revoked.",
    ),
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
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sessionid",
                    "description": "A signed-in browser session (with its CSRF token for writes).",
                },
            },
            "schemas": SCHEMAS,
        },
        "paths": PATHS,
    }
