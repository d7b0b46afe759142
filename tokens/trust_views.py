"""Pages of Profile › Integrations › Keyless CI: a person's trust policies, their exchanges and tokens.

The same pages serve the policies of the service accounts the person manages: the account owns the
policy (and the tokens it mints), the person is recorded as the actor. Server-rendered forms that work
without JavaScript; every rule is ``TrustPolicy``'s.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from .http import client_ip, managed_account_or_404, service_account_of
from .models import ServiceAccount, SitePolicy, Token, TokenExchange, TrustPolicy
from .trust_forms import TrustPolicyForm

EXCHANGES_SHOWN = 20


def _managed_policy_or_404(request, pk):
    """Return policy *pk* if the person manages it (theirs, or a service account's they manage now)."""
    policies = TrustPolicy.objects.manageable_by(request.user).select_related("user__service_account__team")
    return get_object_or_404(policies, pk=pk)


def _count_live(policies):
    """Set ``live`` on each of *policies*: how many tokens it minted still work."""
    live = dict(
        Token.objects.filter(exchange__policy__in=policies)
        .active()
        .values_list("exchange__policy")
        .annotate(n=Count("pk"))
    )
    for policy in policies:
        policy.live = live.get(policy.pk, 0)


def _see_other(url):
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@login_required
@require_GET
@never_cache
def policy_list(request):
    """The person's trust policies, their live minted tokens and the latest exchanges (refusals with why).

    Below them, each service account the person manages, with its policies.
    """
    accounts = list(ServiceAccount.objects.managed_by(request.user).select_related("user", "team"))
    owners = [request.user.pk] + [account.user_id for account in accounts]
    policies = list(TrustPolicy.objects.filter(user__in=owners).with_last_exchange().order_by("pk"))
    _count_live(policies)
    for account in accounts:
        account.policies = [policy for policy in policies if policy.user_id == account.user_id]
    exchanges = TokenExchange.objects.for_user(request.user).select_related("token", "policy")[
        :EXCHANGES_SHOWN
    ]
    return render(
        request,
        "trust/policy_list.html",
        {
            "policies": [policy for policy in policies if policy.user_id == request.user.pk],
            "service_accounts": accounts,
            "exchanges": exchanges,
            "issuers_allowed": bool(settings.OIDC_FEDERATION_ISSUERS),
            "exchange_url": settings.SITE_URL + reverse("api-token-exchange"),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
def policy_create(request, account=None):
    """Create a policy of the person's, or with *account* one of a service account they manage."""
    service_account = None if account is None else managed_account_or_404(request, account)
    owner = request.user if service_account is None else service_account.user
    default_access = SitePolicy.load().default_access
    form = TrustPolicyForm(request.POST or None, user=owner, default_access=default_access)
    if request.method == "POST" and form.is_valid():
        try:
            policy = TrustPolicy.objects.create_policy(
                owner=owner, actor=request.user, ip=client_ip(request), **form.policy_fields()
            )
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            messages.success(request, _("Created the trust policy “%(name)s”.") % {"name": policy.name})
            return _see_other(reverse("trust:detail", args=[policy.pk]))
    status = 400 if request.method == "POST" else 200
    return render(
        request, "trust/policy_form.html", {"form": form, "service_account": service_account}, status=status
    )


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
def policy_detail(request, pk):
    """The policy's settings (editable), its live tokens and its latest exchanges."""
    policy = _managed_policy_or_404(request, pk)
    form = TrustPolicyForm(request.POST or None, user=policy.user, policy=policy)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                changed = policy.update(actor=request.user, ip=client_ip(request), **form.policy_fields())
            except ValidationError as error:
                form.add_model_errors(error)
            else:
                if changed:
                    messages.success(request, _("Saved the trust policy “%(name)s”.") % {"name": policy.name})
                else:
                    messages.info(request, _("Nothing changed."))
                return _see_other(reverse("trust:detail", args=[policy.pk]))
        status = 400
    return render(
        request,
        "trust/policy_detail.html",
        {
            "policy": policy,
            "service_account": service_account_of(policy),
            "form": form,
            "live_tokens": policy.live_tokens().order_by("-created_at"),
            "exchanges": policy.exchanges.select_related("token")[:EXCHANGES_SHOWN],
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
def policy_delete(request, pk):
    """Ask for confirmation (GET), then delete the policy and revoke its live tokens (POST)."""
    policy = _managed_policy_or_404(request, pk)
    if request.method == "GET":
        context = {
            "policy": policy,
            "service_account": service_account_of(policy),
            "live": policy.live_tokens().count(),
        }
        return render(request, "trust/policy_delete.html", context)
    revoked = policy.remove(actor=request.user, ip=client_ip(request))
    messages.success(
        request,
        _("Deleted the trust policy “%(name)s” and revoked %(n)d live token(s) it minted.")
        % {"name": policy.name, "n": revoked},
    )
    return _see_other(reverse("trust:list"))
