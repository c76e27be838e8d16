"""The /fhir/ views: read, search (a searchset Bundle), create where a provider creates
(POST ServiceRequest: a worklist order) and the CapabilityStatement.

Authentication and the active-doctor check are the REST API's (token or session,
alliance.api); what a principal sees and may make is decided by the providers, which ask
their apps' access functions. Errors are OperationOutcomes (R4 3.1.0.4), with the same 404 for
a missing and a forbidden object; a resource sent to be created that is not valid FHIR is a
400, one this server cannot act on a 422 (R4 3.1.0.8), each issue naming where it is.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpResponse
from django.urls import reverse
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from alliance.access import AccessDenied, Principal, module_off_message, module_on, principal_of
from alliance.fhir import registry
from alliance.fhir.registry import Provider, Refused
from alliance.fhir.search import Param, SearchError, parse

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "json"
    charset = "utf-8"


class AlwaysFhirJson(BaseContentNegotiation):
    """Every answer is FHIR JSON, whatever the Accept header (_format=xml is refused by the search parser)."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


ISSUE_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid",
    status.HTTP_401_UNAUTHORIZED: "login",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not-found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "not-supported",
    status.HTTP_406_NOT_ACCEPTABLE: "not-supported",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled",
}


def operation_outcome(code: str, diagnostics: str, expression: str = "") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every refusal as an OperationOutcome, with the status DRF would give it."""
    if isinstance(exc, SearchError):
        body = operation_outcome("not-supported" if "support" in str(exc) else "invalid", str(exc), exc.parameter)
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Refused):
        issues = [operation_outcome(i.code, i.diagnostics, i.expression)["issue"][0] for i in exc.issues]
        return Response({"resourceType": "OperationOutcome", "issue": issues}, status=exc.status)
    if isinstance(exc, AccessDenied):
        return Response(operation_outcome("forbidden", str(exc)), status=status.HTTP_403_FORBIDDEN)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
    response.data = operation_outcome(ISSUE_CODES.get(response.status_code, "exception"), str(detail))
    return response


class FhirView(APIView):
    renderer_classes = [FhirJsonRenderer]
    content_negotiation_class = AlwaysFhirJson
    resource_type = ""

    def get_exception_handler(self) -> Any:
        return exception_handler


def base_url(request: Request) -> str:
    """The service base URL (R4 3.1.0.1.2), e.g. https://pacs.example.org/fhir"""
    return request.build_absolute_uri(reverse("fhir:metadata")).removesuffix("/metadata")


def _switched_on(principal: Principal, provider: Provider) -> bool:
    return not provider.module or module_on(principal, provider.module)


def _module_off(principal: Principal, providers: list[Provider]) -> Http404:
    return Http404(module_off_message(providers[0].module, principal.institution))


class Search(FhirView):
    """GET /fhir/<type>?params: a searchset Bundle of what the principal may see, newest first."""

    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        every = registry.providers_for(self.resource_type)
        providers = [p for p in every if p.searchable and _switched_on(principal, p)]
        if not providers:
            raise _module_off(principal, every)
        params: dict[str, Param] = {}
        for provider in providers:
            params |= provider.params
        search = parse(dict(request.query_params.lists()), params)
        answers = [(p, p.search(principal, search)) for p in providers]
        totals = [rows.count() for _p, rows in answers]
        entries, skip, want = [], search.offset, search.count
        for (provider, rows), total in zip(answers, totals, strict=True):
            if want == 0:
                break
            if skip >= total:
                skip -= total
                continue
            page = list(rows[skip : skip + want])
            skip, want = 0, want - len(page)
            entries += provider.resources(request, principal, page, read=False) if page else []
        return Response(self._bundle(request, entries, sum(totals), search.offset, search.count))

    def _bundle(self, request: Request, resources: list[dict[str, Any]], total: int, offset: int, count: int) -> Any:
        base = base_url(request)
        links = [{"relation": "self", "url": request.build_absolute_uri()}]
        if offset + count < total and count:
            links.append({"relation": "next", "url": self._page_url(request, offset + count)})
        if offset and count:
            links.append({"relation": "previous", "url": self._page_url(request, max(offset - count, 0))})
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "link": links,
            "entry": [
                {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in resources
            ],
        }

    def post(self, request: Request) -> Response:
        """POST /fhir/<type>: create (R4 3.1.0.8). 201 with Location and the resource; the same
        order sent again is answered 200 with the resource it made the first time."""
        principal = principal_of(request)
        provider = registry.creator_for(self.resource_type)
        if provider is None:
            raise MethodNotAllowed("POST")
        if not _switched_on(principal, provider):
            raise _module_off(principal, [provider])
        made, created = provider.create(principal, request.data)
        (resource,) = provider.resources(request, principal, [made], read=True)
        location = f"{base_url(request)}/{resource['resourceType']}/{resource['id']}"
        answer = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(resource, status=answer, headers={"Location": location})

    @staticmethod
    def _page_url(request: Request, offset: int) -> str:
        query = [(k, v) for k, values in request.query_params.lists() for v in values if k != "_offset"]
        return request.build_absolute_uri(request.path) + "?" + urlencode([*query, ("_offset", str(offset))])


class Read(FhirView):
    """GET /fhir/<type>/<id>: one resource, the same 404 whether it is missing or not the principal's."""

    def get(self, request: Request, resource_id: str) -> Response | HttpResponse:
        principal = principal_of(request)
        found = registry.provider_of_id(self.resource_type, resource_id)
        if found is None:
            raise Http404(f"No such {self.resource_type}.")
        provider, local_id = found
        if not _switched_on(principal, provider):
            raise _module_off(principal, [provider])
        obj = provider.read(principal, local_id)
        (resource,) = provider.resources(request, principal, [obj], read=True)
        if self.resource_type == "Binary" and not _wants_fhir(request):
            return HttpResponse(base64.b64decode(resource["data"]), content_type=resource["contentType"])
        return Response(resource)


def _wants_fhir(request: Request) -> bool:
    """Binary (R4 2.14.0): its native content, unless FHIR JSON is asked for by Accept or _format."""
    accept = request.META.get("HTTP_ACCEPT", "")
    return "fhir+json" in accept or request.query_params.get("_format", "") in ("json", FHIR_JSON)


class Metadata(FhirView):
    """GET /fhir/metadata: the CapabilityStatement, open to anyone (R4 3.1.0.11)."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        return Response(capability_statement(base_url(request)))


def capability_statement(base: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": timezone.now().date().isoformat(),
        "publisher": "Alliance image-sharing network",
        "kind": "instance",
        "software": {"name": "Alliance image-sharing network"},
        "implementation": {
            "description": "FHIR R4 API of the alliance's images, cases and reports; "
            "worklist orders are created as ServiceRequest",
            "url": base,
        },
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every read and write goes through the alliance's access rules and is audited.",
                "security": {
                    "description": 'An API token sent as "Authorization: Bearer <key>" (or "Token <key>"), '
                    "or a signed-in session; only active doctors of active institutions."
                },
                "resource": [_resource_capability(t) for t in registry.resource_types()],
            }
        ],
    }


def _resource_capability(resource_type: str) -> dict[str, Any]:
    providers = registry.providers_for(resource_type)
    params: dict[str, Param] = {}
    for provider in providers:
        params |= provider.params
    searchable = any(p.searchable for p in providers)
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [
            {"code": "read"},
            *([{"code": "search-type"}] if searchable else []),
            *([{"code": "create"}] if registry.creator_for(resource_type) else []),
        ],
    }
    documentation = " ".join(p.profile for p in providers if p.profile)
    if documentation:
        entry["documentation"] = documentation
    if params:
        entry["searchParam"] = [
            {"name": name, "type": p.type, "documentation": p.documentation} for name, p in sorted(params.items())
        ]
    return entry
