"""The design limit: the least work a request can do and keep the API's contract, for the benchmark only.

``limit_me`` answers what GET /api/users/me answers a bearer token, doing only what the contract asks:
the token's shape and signature checked without a query (a forged token never reaches the database),
one indexed lookup by the token's public id joined to its owner, the keyed digest compared in constant
time, the token's and the owner's state checked in the same statement, and one autocommitted usage
INSERT with the portal's relaxed durability. No throttle, no restrictions, no metrics, no rotation
headers, no summariser: none of the portal's other rules. The portal's recorded bearer path divided by
this view, in the same processes and run, is how close our code comes to what the work itself costs.

The benchmark serves it twice: under the portal's whole MIDDLEWARE (``/bench/limit/me``), where the
API middleware steps aside because the path is not under /api/, and behind only what a JSON API needs
(``/bench/limit-minimal/me``, ``bench.knoxsite.wsgi``). The first shows what our code costs, the
difference between the two what the middleware stack costs.
"""

import time
from functools import lru_cache

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.http import JsonResponse
from django.utils import timezone

from tokens import credentials
from tokens.constants import USAGE_DATABASE
from tokens.errors import unauthorized


@lru_cache(maxsize=1)
def _tables():
    token = apps.get_model("tokens", "Token")._meta.db_table
    user = get_user_model()._meta.db_table
    usage = apps.get_model("tokens", "UsageRecord")._meta.db_table
    lookup = (
        "SELECT t.id, t.digest, t.pepper_id, u.id, u.username, u.email, u.first_name, u.last_name, "
        f"u.is_staff, t.access FROM {token} t JOIN {user} u ON u.id = t.user_id "
        "WHERE t.public_id = %s AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %s) "
        "AND u.is_active"
    )
    insert = (
        f"INSERT INTO {usage} (token_id, legacy_key_id, user_id, at, accepted, method, path, status, ip, "
        "user_agent, duration_ms, would_refuse) VALUES (%s, NULL, %s, %s, %s, %s, %s, 200, %s, %s, %s, %s)"
    )
    return lookup, insert


def limit_me(request):
    """Answer the caller of a bearer token with one lookup and one usage INSERT, and nothing else."""
    started = time.perf_counter()
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme != "Bearer":
        return unauthorized("Authentication credentials were not provided.")
    try:
        parsed = credentials.parse(value)
    except credentials.MalformedToken:
        return unauthorized("The token is malformed or was not issued by this site.")
    lookup, insert = _tables()
    now = timezone.now()
    at = connection.ops.adapt_datetimefield_value(now)
    # The lookup stands in for Django's health check (CONN_HEALTH_CHECKS), as the portal's does: on
    # PostgreSQL the check is a round trip of its own, which the contract does not need. (The portal
    # also retries the lookup on a connection found dead; a benchmark's never is.)
    if connection.connection is not None and connection.health_check_enabled:
        connection.health_check_done = True
    with connection.cursor() as cursor:
        cursor.execute(lookup, [parsed.public_id, at])
        row = cursor.fetchone()
        if row is None or not credentials.matches(parsed, row[1], row[2]):
            return unauthorized("The token is not valid.")
        token_id, _digest, _pepper, user_id, username, email, first, last, is_staff, access = row
        params = [
            token_id,
            user_id,
            at,
            True,
            request.method,
            request.path,
            request.META.get("REMOTE_ADDR"),
            request.META.get("HTTP_USER_AGENT", "")[:256],
            (time.perf_counter() - started) * 1000,
            False,
        ]
        # The portal's durability for a usage record (docs/performance.md): committed at once, without
        # waiting for the disk. On SQLite that is a setting of the connection: the INSERT goes through
        # the usage connection the portal keeps at synchronous=NORMAL, as the portal's does.
        if connection.vendor == "postgresql":
            cursor.execute(insert + " RETURNING set_config('synchronous_commit', 'off', true)", params)
        else:
            with connections[USAGE_DATABASE].cursor() as usage:
                usage.execute(insert, params)
    body = {
        "id": user_id,
        "username": username,
        "email": email,
        "first_name": first,
        "last_name": last,
        "is_staff": bool(is_staff),
        "auth": {"method": "bearer", "token_id": token_id, "legacy_key_id": None, "access": access},
    }
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response
