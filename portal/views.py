"""The operators' endpoints: the health check, the metrics, and the migration guide's text."""

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from tokens import metrics as portal_metrics
from tokens.errors import api_error, challenge, unauthorized
from tokens.models import UsageRecord
from tokens.models.restrictions import address_allowed
from tokens.uses import Use, authenticate_use, record_use

METRICS_PERMISSION = "tokens.view_metrics"


@require_safe
@never_cache
def healthz(request):
    """Answer GET or HEAD with 200 when the database answers a query, 503 when it does not.

    No authentication: load balancers call it.
    """
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        # Drop the broken connection so the next check reconnects once the database is back.
        connection.close_if_unusable_or_obsolete()
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_safe
@never_cache
def metrics(request):
    """Answer Prometheus with every metric, to METRICS_ALLOWED_IPS or a token allowed to read them.

    From anywhere else: 401 without a credential (or with a refused one), 403 for a token whose owner
    lacks ``tokens.view_metrics``. A token's scrape is recorded as a use of that token, like any other.
    """
    if not settings.METRICS_ENABLED:
        raise Http404
    use = Use.of(request, entry="metrics")
    if settings.METRICS_ALLOWED_IPS and address_allowed(settings.METRICS_ALLOWED_IPS, use.ip):
        return _metrics_response()
    credential, refusal = authenticate_use(request, use)
    if refusal is not None:
        return refusal
    if credential is None:
        portal_metrics.count_check(use.entry, "none", "missing")
        return unauthorized(_("Authentication credentials were not provided."))
    if not credential.user.has_perm(METRICS_PERMISSION):
        detail = _("Reading the metrics needs a token whose owner may view metrics.")
        response = api_error(403, detail)
        response["WWW-Authenticate"] = challenge("insufficient_scope", detail)
        return record_use(use, credential, response, accepted=False)
    return record_use(use, credential, _metrics_response(), accepted=True)


def _metrics_response():
    text = portal_metrics.exposition(lag=UsageRecord.objects.lag)
    return HttpResponse(text, content_type=portal_metrics.CONTENT_TYPE)


@require_safe
def migration_guide(request):
    """Serve docs/migration.md, the page the Link header of every legacy-key response points to."""
    text = (settings.BASE_DIR / "docs" / "migration.md").read_text(encoding="utf-8")
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
