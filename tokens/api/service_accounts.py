"""The service-account endpoints: a manager's session manages the account's tokens, as with /api/tokens.

The token endpoints are those of /api/tokens with the account as the owner and the signed-in manager
as the actor (the same functions, the same shapes and rules). A token or a legacy key is refused
with 403 here whoever holds it: a leaked credential never manages a team's integrations. Anyone who
does not manage the account gets 404, as for an id that does not exist.
"""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from ..errors import forbidden
from ..http import managed_account_or_404
from ..models import ServiceAccount, SitePolicy, Token
from .base import api_view
from .views import _one_token, _owner_tokens, _rotate, paginate

TOKEN_ROUTE = "api-service-account-token"


def account_json(account):
    return {
        "id": account.pk,
        "username": account.user.get_username(),
        "description": account.description,
        "team": account.team.name,
        "is_active": account.user.is_active,
    }


def _refuse_credentials(request):
    if request.auth is not None:
        return forbidden(
            request,
            _("Service accounts are managed from a signed-in session by their managers, never with a token."),
        )
    return None


def _account_token(request, account, pk):
    tokens = Token.objects.for_user(account.user).select_related("revoked_by", "replaced_by", "replaces")
    return get_object_or_404(tokens, pk=pk)


@api_view(["GET"])
def service_accounts_list(request):
    """List the service accounts the signed-in person manages."""
    refusal = _refuse_credentials(request)
    if refusal is not None:
        return refusal
    accounts = (
        ServiceAccount.objects.managed_by(request.user)
        .select_related("user", "team")
        .order_by("user__username")
    )
    return JsonResponse(paginate(request, accounts, account_json))


@api_view(["GET", "POST"])
def service_account_tokens(request, account):
    """List a managed service account's tokens, or create one (POST): the value once, in the 201."""
    refusal = _refuse_credentials(request)
    if refusal is not None:
        return refusal
    account = managed_account_or_404(request, account)
    return _owner_tokens(request, account.user, location=TOKEN_ROUTE, account=account)


@api_view(["GET", "PATCH", "DELETE"])
def service_account_token(request, account, pk):
    """Show, change (PATCH) or revoke (DELETE) a token of a managed service account."""
    refusal = _refuse_credentials(request)
    if refusal is not None:
        return refusal
    account = managed_account_or_404(request, account)
    return _one_token(request, _account_token(request, account, pk))


@api_view(["POST"])
@sensitive_variables("plaintext")
def service_account_token_rotate(request, account, pk):
    """Rotate a token of a managed service account: the new value once, in the 201."""
    refusal = _refuse_credentials(request)
    if refusal is not None:
        return refusal
    account = managed_account_or_404(request, account)
    token = _account_token(request, account, pk)
    return _rotate(request, token, SitePolicy.load(), location=TOKEN_ROUTE, account=account)
