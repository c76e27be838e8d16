"""Which app answers for which FHIR resource type (filled by the apps' AppConfig.ready).

A resource type may have several providers: a ServiceRequest is a consult, a referral or a
worklist order, told apart by the prefix of its id ("consult-12", "referral-7", "worklist-3");
a search asks each of them and pages through their answers one after the other. At most one
of them creates (POST): a ServiceRequest sent to us is a worklist order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from django.db.models import QuerySet
from rest_framework.request import Request

from alliance.access import Principal
from alliance.fhir.search import Param, Search


@dataclass(frozen=True)
class Issue:
    """One problem of a resource sent to be created: what is wrong (R4 issue-type code, the
    text) and where (a FHIRPath expression, e.g. ServiceRequest.subject.identifier)."""

    code: str
    diagnostics: str
    expression: str = ""


class Refused(Exception):
    """A resource sent to be created that is not taken: 400 when it is not a valid resource,
    422 when it is valid FHIR that this server cannot act on; the issues say why."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(issue.diagnostics for issue in issues))
        self.status = status
        self.issues = issues


class Provider:
    """What an app tells the FHIR API about one kind of its objects as one resource type.

    `search` and `read` go through the app's access functions (read raises the same 404 for a
    missing and a forbidden object, and audits the refusal); `resources` maps the objects it is
    given to FHIR JSON and writes the audit events of that read, one per object. A provider
    that `creates` takes `POST /fhir/<type>`: `create` checks the resource, writes through its
    app's service and returns the object and whether it is new (False: the same order again).
    """

    resource_type: ClassVar[str]
    prefix: ClassVar[str] = ""  # the ids this provider answers for start with it ("consult-")
    module: ClassVar[str] = ""  # the module (C11) that switches it on and off; "" for none
    params: ClassVar[dict[str, Param]] = {}
    searchable: ClassVar[bool] = True
    profile: ClassVar[str] = ""  # documentation of the mapping, for the CapabilityStatement
    creates: ClassVar[bool] = False

    def search(self, principal: Principal, search: Search) -> QuerySet[Any]:
        raise NotImplementedError

    def read(self, principal: Principal, local_id: str) -> Any:
        raise NotImplementedError

    def resources(self, request: Request, principal: Principal, rows: list[Any], *, read: bool) -> list[dict[str, Any]]:
        raise NotImplementedError

    def create(self, principal: Principal, resource: Any) -> tuple[Any, bool]:
        """The object the resource makes (or finds again), or Refused; AccessDenied when the
        principal may not make it."""
        raise NotImplementedError


_PROVIDERS: dict[str, list[Provider]] = {}


def register(provider: Provider) -> None:
    """Add a provider (once per class: a second ready() of the same app changes nothing)."""
    found = _PROVIDERS.setdefault(provider.resource_type, [])
    if not any(type(p) is type(provider) for p in found):
        found.append(provider)


def providers_for(resource_type: str) -> list[Provider]:
    return list(_PROVIDERS.get(resource_type, []))


def resource_types() -> list[str]:
    return sorted(_PROVIDERS)


def creator_for(resource_type: str) -> Provider | None:
    """The provider that creates resources of this type, if one does."""
    return next((p for p in providers_for(resource_type) if p.creates), None)


def provider_of_id(resource_type: str, resource_id: str) -> tuple[Provider, str] | None:
    """The provider whose prefix the id carries (the longest), and the id without it."""
    matching = [p for p in providers_for(resource_type) if resource_id.startswith(p.prefix)]
    if not matching:
        return None
    provider = max(matching, key=lambda p: len(p.prefix))
    return provider, resource_id[len(provider.prefix) :]
