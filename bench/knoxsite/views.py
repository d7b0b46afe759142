"""The equivalent of GET /api/users/me behind knox's and DRF's token authentication."""

from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.authentication import TokenAuthentication as DrfTokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from tokens.api import user_json


class KnoxMe(APIView):
    """Answer the caller's user, authenticated by a knox token (``Authorization: Token …``)."""

    authentication_classes = [KnoxTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        body = user_json(request.user)
        body["auth"] = {"method": "knox", "token_id": None, "legacy_key_id": None}
        return Response(body)


class DrfTokenMe(APIView):
    """Answer the caller's user, authenticated by DRF's plaintext token (``Authorization: Token …``)."""

    authentication_classes = [DrfTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        body = user_json(request.user)
        body["auth"] = {"method": "drf_token", "token_id": None, "legacy_key_id": None}
        return Response(body)
