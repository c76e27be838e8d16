"""Who may configure routing, read its queue, and send a study somewhere. One decision per function.

- An institution's admin keeps its destinations and rules and reads its queue (an alliance
  admin does not: the queue names studies, and routing is the institution's own plumbing).
- A study goes only to a destination of the sender's own institution, and only when that
  institution's DICOM devices may see it (imaging.access.studies_visible_to_devices_of): what
  routing delivers is what the destination could have retrieved itself.
"""

from __future__ import annotations

from django.db.models import QuerySet

from alliance.access import Principal
from alliance.models import Institution, Role
from imaging import access as imaging_access
from imaging.models import Study
from imaging.routing.models import Destination, RouteItem, RouteRule


def may_manage_routing(principal: Principal, institution: Institution) -> bool:
    return (
        principal.doctor is not None
        and principal.has_role(Role.INSTITUTION_ADMIN)
        and principal.institution_id == institution.pk
        and principal.has_module(imaging_access.IMAGE_STORE_MODULE)
    )


def routing_institution_of(principal: Principal) -> Institution | None:
    """The institution whose routing the principal keeps, if any (the console's and the API's)."""
    institution = principal.institution
    if institution is None or not may_manage_routing(principal, institution):
        return None
    return institution


def destinations_managed_by(principal: Principal) -> QuerySet[Destination]:
    institution = routing_institution_of(principal)
    if institution is None:
        return Destination.objects.none()
    return Destination.objects.filter(institution=institution).select_related("institution")


def rules_managed_by(principal: Principal) -> QuerySet[RouteRule]:
    institution = routing_institution_of(principal)
    if institution is None:
        return RouteRule.objects.none()
    return RouteRule.objects.filter(institution=institution).select_related(
        "destination", "target_institution", "target_pool"
    )


def queue_visible_to(principal: Principal) -> QuerySet[RouteItem]:
    """The items owed to the destinations of the institution the principal keeps routing for."""
    institution = routing_institution_of(principal)
    if institution is None:
        return RouteItem.objects.none()
    return RouteItem.objects.filter(destination__institution=institution).select_related("destination", "study")


def may_route_study(principal: Principal, study: Study, destination: Destination) -> bool:
    """Send this study to this destination by hand: a clinical doctor who sees the study,
    to an active destination of their own institution, whose devices may see the study."""
    if principal.doctor is None or not principal.is_clinical or not principal.has_module("image_store"):
        return False
    if not destination.active or destination.institution_id != principal.institution_id:
        return False
    if not imaging_access.studies_visible_to(principal).filter(pk=study.pk).exists():
        return False
    return imaging_access.studies_visible_to_devices_of(destination.institution).filter(pk=study.pk).exists()


def destinations_for_study(principal: Principal, study: Study) -> list[Destination]:
    """The destinations the study page offers ("Send to…")."""
    institution = principal.institution
    if principal.doctor is None or institution is None:
        return []
    candidates = Destination.objects.filter(institution=institution, active=True)
    return [d for d in candidates.select_related("institution") if may_route_study(principal, study, d)]


def case_destinations_for(principal: Principal) -> QuerySet[Destination]:
    """The destinations a doctor may send a case's studies to: their own institution's active
    ones (the case's app decides whether they may send that case's studies at all)."""
    if principal.doctor is None or principal.institution_id is None:
        return Destination.objects.none()
    return Destination.objects.filter(institution_id=principal.institution_id, active=True)
