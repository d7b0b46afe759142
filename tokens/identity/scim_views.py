"""The SCIM endpoints at /scim/v2/: django-scim2's views behind the portal's own token checks.

A request is authenticated exactly as an API request is (``authenticate_use``, which the API middleware
and forward authentication share): a bearer token, checked for revocation, expiry, rotation, its owner,
its address allow-list and read-only access, and recorded as a use. Its owner must hold
``tokens.scim_provision`` (a narrowed token must keep it). No session and no CSRF: SCIM clients are
servers. Every refusal and every malformed request gets SCIM's error body (RFC 7644, section 3.12),
never a 500; without the database, 503.
"""

import json
import logging

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, DataError, ProgrammingError, transaction
from django.http import HttpResponse
from django.urls import re_path
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import View
from django_scim import views as scim
from django_scim.exceptions import SCIMException

from ..constants import Method
from ..errors import challenge
from ..uses import Use, authenticate_use, record_use
from .scim import (
    GROUP_SCHEMA,
    MAX_RESULTS,
    USER_SCHEMA,
    ScimGroup,
    ScimUser,
    attribute_names,
    lookup_id,
    project,
    required_attributes,
    schemas,
)
from .scim_patch import ScimError, apply_patch, load_body

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/scim+json"
PERMISSION = "tokens.scim_provision"


def scim_response(document, *, status=200):
    return HttpResponse(json.dumps(document), content_type=CONTENT_TYPE, status=status)


def scim_error(error):
    return scim_response(error.to_dict(), status=error.status)


def _as_scim(response):
    """Give a refusal of the token checks (401, 403, 429, 503) SCIM's error body, keeping its headers."""
    try:
        detail = json.loads(response.content)["detail"]
    except (ValueError, KeyError):
        detail = _("The request was refused.")
    replacement = scim_error(ScimError(response.status_code, detail))
    for header in ("WWW-Authenticate", "Retry-After", "Link", "Deprecation", "Sunset"):
        if header in response:
            replacement[header] = response[header]
    return replacement


def _refusal(status, detail, *, error=None):
    response = scim_error(ScimError(status, detail))
    response["WWW-Authenticate"] = challenge(error, detail if error else None)
    return response


class ScimEndpoint:
    """Authenticate, answer in SCIM's shape, record the use; the resource views' own work comes after."""

    implemented = True

    @method_decorator(csrf_exempt)  # a server's token, never a browser's cookie
    def dispatch(self, request, *args, **kwargs):
        response = self._checked(request, *args, **kwargs)
        # Answers about people at one moment: no cache keeps them, nor a deactivation's old answer.
        response["Cache-Control"] = "no-store"
        return response

    def _checked(self, request, *args, **kwargs):
        use = Use.of(request)
        credential, refusal = authenticate_use(request, use)
        if refusal is not None:
            return _as_scim(refusal)
        if credential is None:
            return _refusal(401, _("Authentication credentials were not provided."))
        if credential.method != Method.BEARER:
            # Legacy keys are on their way out: a provisioning client starts with a bearer token.
            response = _refusal(401, _("SCIM needs a bearer token."), error="invalid_token")
            return record_use(use, credential, response, accepted=False)
        if not credential.user.has_perm(PERMISSION):
            response = _refusal(
                403, _("SCIM needs a token whose owner may provision people."), error="insufficient_scope"
            )
            return record_use(use, credential, response, accepted=False)
        # The SCIM client acts as the token's owner; the browser session (if any) plays no part.
        request.user = credential.user
        request.auth = credential
        try:
            response = self.answer(request, *args, **kwargs)
        except DatabaseError:
            log.error("database unavailable during a SCIM request")
            detail = _("The service cannot reach its database. Try again shortly.")
            response = scim_error(ScimError(503, detail))
            response["Retry-After"] = "5"
            return response
        return record_use(use, credential, response, accepted=True)

    def answer(self, request, *args, **kwargs):
        if not self.implemented:
            return scim_error(ScimError(501, _("This SCIM feature is not offered here.")))
        try:
            return View.dispatch(self, request, *args, **kwargs)
        except ScimError as error:
            return scim_error(error)
        except SCIMException as error:
            return scim_error(ScimError(error.status, error.detail, error.scim_type))
        except RequestDataTooBig:
            return scim_error(ScimError(413, _("The body is too large.")))

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = scim_error(ScimError(405, _("Method not allowed.")))
        response["Allow"] = ", ".join(m.upper() for m in self._allowed_methods())
        return response

    def load_body(self, body):
        return load_body(body)


class ResourceEndpoint(ScimEndpoint):
    """Users and Groups: lookups by id, paging, filters and PATCH made safe for any input."""

    schema = None

    def answer(self, request, *args, **kwargs):
        # A collection is read and added to; one resource is read, replaced, patched and deleted.
        one = bool(kwargs.get("uuid"))
        if request.method in (("POST",) if one else ("PUT", "PATCH", "DELETE")):
            response = scim_error(ScimError(405, _("Method not allowed.")))
            response["Allow"] = "GET, PUT, PATCH, DELETE" if one else "GET, POST"
            return response
        return super().answer(request, *args, **kwargs)

    def get_object(self):
        pk = lookup_id(self.kwargs.get("uuid", ""))
        found = self.visible().filter(pk=pk).first() if pk is not None else None
        if found is None:
            raise ScimError(404, _("Resource %(id)s not found.") % {"id": self.kwargs.get("uuid", "")})
        return found

    def visible(self):
        return self.model_cls.objects.all()

    def get_single(self, request):
        adapter = self.scim_adapter(self.get_object(), request=request)
        response = scim_response(self._projected(request, adapter.to_dict()))
        response["Location"] = adapter.location
        return response

    @staticmethod
    def _projected(request, document):
        return project(
            document, attributes=request.GET.get("attributes"), excluded=request.GET.get("excludedAttributes")
        )

    def get_many(self, request):
        query = request.GET.get("filter")
        start, count = self._page(request)
        if query:
            return self._search(request, query, start, count)
        return self._build_response(request, self.visible().order_by("pk"), start, count)

    def _page(self, request):
        # RFC 7644, section 3.4.2.4: a startIndex below 1 means 1, a negative count means 0.
        try:
            start = int(request.GET.get("startIndex", 1))
            count = int(request.GET.get("count", MAX_RESULTS))
        except ValueError:
            raise ScimError(400, _("startIndex and count must be integers."), "invalidValue") from None
        return max(1, min(start, 2**31)), max(0, min(count, MAX_RESULTS))

    def _search(self, request, query, start, count):
        if len(query) > 1000:
            raise ScimError(400, _("The filter is too long."), "invalidFilter")
        try:
            # In a savepoint: a value the database cannot compare (active eq "maybe" on PostgreSQL) fails
            # the statement, and only the statement.
            with transaction.atomic():
                found = list(self.__class__.parser_getter().search(query, request))
        except (DataError, ProgrammingError):
            detail = _("The filter compares values that cannot be compared.")
            raise ScimError(400, detail, "invalidFilter") from None
        except DatabaseError:
            raise  # the database is unreachable: 503
        except Exception:  # the parser's failure to read a filter is the filter's fault, whatever it raises
            raise ScimError(400, _("The filter cannot be read."), "invalidFilter") from None
        return self._build_response(request, found, start, count)

    def _build_response(self, request, rows, start, count):
        total = rows.count() if hasattr(rows, "count") and not isinstance(rows, list) else len(rows)
        page = rows[start - 1 : start - 1 + count]
        resources = [
            self._projected(request, self.scim_adapter(row, request=request).to_dict()) for row in page
        ]
        return scim_response(
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                "totalResults": total,
                "itemsPerPage": len(resources),
                "startIndex": start,
                "Resources": resources,
            }
        )

    def post(self, request, *args, **kwargs):
        with transaction.atomic():
            return super().post(request, *args, **kwargs)

    def put(self, request, *args, **kwargs):
        with transaction.atomic():
            return super().put(request, *args, **kwargs)

    def patch(self, request, *args, **kwargs):
        body = load_body(request.body)
        with transaction.atomic():
            adapter = self.scim_adapter(self.get_object(), request=request)
            document = apply_patch(
                adapter.to_dict(), body, attributes=attribute_names(self.schema), schema=self.schema
            )
            for name in required_attributes(self.schema):
                if document.get(name) is None:
                    raise ScimError(400, _("%(name)s cannot be removed.") % {"name": name}, "mutability")
            adapter.from_dict(document)
            adapter.save()
            response = scim_response(adapter.to_dict())
        response["Location"] = adapter.location
        return response

    def delete(self, request, *args, **kwargs):
        with transaction.atomic():
            return super().delete(request, *args, **kwargs)


class UsersView(ResourceEndpoint, scim.UsersView):
    scim_adapter_getter = staticmethod(lambda: ScimUser)
    schema = USER_SCHEMA

    def visible(self):
        return self.model_cls.objects.exclude(provisioning__deleted_at__isnull=False)


class GroupsView(ResourceEndpoint, scim.GroupsView):
    scim_adapter_getter = staticmethod(lambda: ScimGroup)
    schema = GROUP_SCHEMA


class ServiceProviderConfigView(ScimEndpoint, scim.ServiceProviderConfigView):
    pass


def _list_response(resources):
    return scim_response(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(resources),
            "itemsPerPage": len(resources),
            "startIndex": 1,
            "Resources": resources,
        }
    )


class ResourceTypesView(ScimEndpoint, scim.ResourceTypesView):
    def get(self, request, uuid=None, *args, **kwargs):
        types = {t.resource_type: t.resource_type_dict(request) for t in (ScimUser, ScimGroup)}
        if uuid is None:
            return _list_response(list(types.values()))
        if uuid not in types:
            raise ScimError(404, _("No resource type %(id)s.") % {"id": uuid})
        return scim_response(types[uuid])


class SchemasView(ScimEndpoint, scim.SchemasView):
    def get(self, request, uuid=None, *args, **kwargs):
        found = {s["id"]: s for s in schemas(request)}
        if uuid is None:
            return _list_response(list(found.values()))
        if uuid not in found:
            raise ScimError(404, _("No schema %(id)s.") % {"id": uuid})
        return scim_response(found[uuid])


class NotOffered(ScimEndpoint, scim.SCIMView):
    implemented = False


class Unknown(ScimEndpoint, View):
    """Any other path under /scim/v2/: SCIM's 404, to an authenticated client."""

    def answer(self, request, *args, **kwargs):
        return scim_error(ScimError(404, _("There is no SCIM endpoint here.")))


app_name = "scim"

urlpatterns = [
    re_path(r"^$", NotOffered.as_view(), name="root"),
    re_path(r"^Users(?:/(?P<uuid>[^/]+))?$", UsersView.as_view(), name="users"),
    re_path(r"^Groups(?:/(?P<uuid>[^/]+))?$", GroupsView.as_view(), name="groups"),
    re_path(r"^ServiceProviderConfig$", ServiceProviderConfigView.as_view(), name="service-provider-config"),
    re_path(r"^ResourceTypes(?:/(?P<uuid>[^/]+))?$", ResourceTypesView.as_view(), name="resource-types"),
    re_path(r"^Schemas(?:/(?P<uuid>[^/]+))?$", SchemasView.as_view(), name="schemas"),
    re_path(r"^(?:\.search|Users/\.search|Groups/\.search|Me|Bulk)$", NotOffered.as_view()),
    re_path(r"^.*$", Unknown.as_view()),
]
