"""The equivalent of GET /api/users/me behind knox's and DRF's token authentication, and unrecorded.

``bearer_unrecorded`` is not a way to use the portal: it checks a bearer token exactly as the API
does (``tokens.auth.authenticate``) and answers the same JSON, but writes no usage record. It is in
the benchmark so that every run shows what recording costs under load, next to the recorded path.
"""

from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.authentication import TokenAuthentication as DrfTokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens.api.views import user_json, users_me
from tokens.auth import AuthError, authenticate
from tokens.errors import unauthorized


class _BenchView(APIView):
    """An APIView that leaves the Django request's ``auth`` to the portal."""

    def finalize_response(self, request, response, *args, **kwargs):
        # DRF copies its credential (a knox AuthToken, a DRF Token) onto the Django request's ``auth``,
        # where the portal's log fields (portal/logs.py) expect the portal's own Authentication.
        request._request.auth = None
        return super().finalize_response(request, response, *args, **kwargs)


class KnoxMe(_BenchView):
    """Answer the caller's user, authenticated by a knox token (``Authorization: Token …``)."""

    authentication_classes = [KnoxTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        body = user_json(request.user)
        body["auth"] = {"method": "knox", "token_id": None, "legacy_key_id": None}
        return Response(body)


class DrfTokenMe(_BenchView):
    """Answer the caller's user, authenticated by DRF's plaintext token (``Authorization: Token …``)."""

    authentication_classes = [DrfTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        body = user_json(request.user)
        body["auth"] = {"method": "drf_token", "token_id": None, "legacy_key_id": None}
        return Response(body)


def bearer_unrecorded(request):
    """Answer what GET /api/users/me answers, after the API's own token check, without recording it."""
    try:
        credential = authenticate(request)
    except AuthError as refusal:
        return unauthorized(refusal.description, error=refusal.error)
    if credential is None:
        return unauthorized("Authentication credentials were not provided.")
    request.user, request.auth = credential.user, credential
    return users_me(request)
