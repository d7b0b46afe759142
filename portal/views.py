from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe


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
def migration_guide(request):
    """Serve docs/migration.md, the page the Link header of every legacy-key response points to."""
    from django.conf import settings
    from django.http import HttpResponse

    text = (settings.BASE_DIR / "docs" / "migration.md").read_text(encoding="utf-8")
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
