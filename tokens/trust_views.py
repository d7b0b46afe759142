"""Pages of Profile › Integrations › Keyless CI: a person's trust policies, their exchanges and tokens.

Server-rendered forms that work without JavaScript; every rule is ``TrustPolicy``'s.
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

from .http import client_ip
from .models import ExpirationPolicy, Token, TokenExchange, TrustPolicy
from .trust_forms import TrustPolicyForm

EXCHANGES_SHOWN = 20


def _own_policy_or_404(request, pk):
    return get_object_or_404(TrustPolicy.objects.for_user(request.user), pk=pk)


def _see_other(url):
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@login_required
@require_GET
@never_cache
def policy_list(request):
    """The person's trust policies, their live minted tokens and the latest exchanges (refusals with why)."""
    policies = list(TrustPolicy.objects.for_user(request.user).with_last_exchange().order_by("pk"))
    live = dict(
        Token.objects.filter(exchange__policy__in=policies)
        .active()
        .values_list("exchange__policy")
        .annotate(n=Count("pk"))
    )
    for policy in policies:
        policy.live = live.get(policy.pk, 0)
    exchanges = TokenExchange.objects.for_user(request.user).select_related("token", "policy")[
        :EXCHANGES_SHOWN
    ]
    return render(
        request,
        "trust/policy_list.html",
        {
            "policies": policies,
            "exchanges": exchanges,
            "issuers_allowed": bool(settings.OIDC_FEDERATION_ISSUERS),
            "exchange_url": settings.SITE_URL + reverse("api-token-exchange"),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
def policy_create(request):
    default_access = ExpirationPolicy.load().default_access
    form = TrustPolicyForm(request.POST or None, user=request.user, default_access=default_access)
    if request.method == "POST" and form.is_valid():
        try:
            policy = TrustPolicy.objects.create_policy(
                owner=request.user, actor=request.user, ip=client_ip(request), **form.policy_fields()
            )
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            messages.success(request, _("Created the trust policy “%(name)s”.") % {"name": policy.name})
            return _see_other(reverse("trust:detail", args=[policy.pk]))
    status = 400 if request.method == "POST" else 200
    return render(request, "trust/policy_form.html", {"form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
@csrf_protect
def policy_detail(request, pk):
    """The policy's settings (editable), its live tokens and its latest exchanges."""
    policy = _own_policy_or_404(request, pk)
    form = TrustPolicyForm(request.POST or None, user=request.user, policy=policy)
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
    policy = _own_policy_or_404(request, pk)
    if request.method == "GET":
        return render(
            request, "trust/policy_delete.html", {"policy": policy, "live": policy.live_tokens().count()}
        )
    revoked = policy.remove(actor=request.user, ip=client_ip(request))
    messages.success(
        request,
        _("Deleted the trust policy “%(name)s” and revoked %(n)d live token(s) it minted.")
        % {"name": policy.name, "n": revoked},
    )
    return _see_other(reverse("trust:list"))
