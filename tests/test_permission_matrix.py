"""Issue 22 item 10: every route with a path parameter, from the URL conf and the OpenAPI
schema, asked by every persona for objects of an institution in another alliance: the answer
is a refusal (403/404, or the sign-in / film check for those not signed in), no identifier of
the patient or the objects appears in the body or headers, and a clinician of another clinic
(the stranger) leaves a denied-read audit row wherever the object is a study, series, film,
consult (or its report) or referral.

ROUTES is an explicit table: a route that appears in the URL conf or the schema without an
entry here fails test_every_route_with_a_parameter_is_in_the_table, so a new route cannot
escape this test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from alliance import audit, services
from alliance.access import resolve_principal
from alliance.models import ApiToken, AuditEvent, PrivilegeChange
from consults import services as consult_services
from consults.models import CriticalFinding, CriticalResult, Notification, ReportTemplate
from consults.screening import services as screening_services
from consults.screening.models import Programme
from imaging import films, worklist
from imaging.models import BreakGlassReview
from imaging.routing.models import Destination, RouteItem, RouteRule
from referrals import services as referral_services
from referrals.models import ReferralNotification
from tests import factories
from tests.factories import store_ct_study

FAR_PATIENT_ID, FAR_NAME = "FAR-4242", "FARAWAY^SECRET"


@dataclass(frozen=True)
class Route:
    """How to ask for a route: the method, its path arguments from the far objects, and the
    kind of object whose refusal is audited (None: membership and other non-patient objects)."""

    kwargs: Callable[[Any], dict[str, Any]]
    method: str = "get"
    audited: str | None = None


def study(f: Any) -> dict[str, Any]:
    return {"study_uid": f.study.study_uid}


def dw(f: Any, *parts: str) -> dict[str, Any]:
    values = {"study": f.study.study_uid, "series": f.series.series_uid, "instance": f.instance.sop_uid}
    values |= {"frames": "1", "tag": "7FE00010"}
    return {k: values[k] for k in parts}


def teaching_dw(f: Any) -> dict[str, Any]:
    image = f.teaching_image
    return {
        "pk": f.teaching_case.pk,
        "study": image.study_uid,
        "series": image.series_uid,
        "instance": image.sop_uid,
        "frames": "1",
    }


def film(f: Any, **more: Any) -> dict[str, Any]:
    return {"key": f.film.handle, **more}


def pk(attr: str) -> Callable[[Any], dict[str, Any]]:
    return lambda f: {"pk": getattr(f, attr).pk}


D = "dicomweb/studies/<str:study>"
S = D + "/series/<str:series>"
I = S + "/instances/<str:instance>"  # noqa: E741
F = "film/<str:key>/dicomweb/studies/<str:study>"
FS = F + "/series/<str:series>"
FI = FS + "/instances/<str:instance>"

ROUTES: dict[str, Route] = {
    # pages of the alliance's own management (membership: not patient data, refused unaudited)
    "figures/<slug:section>/<slug:table>.csv": Route(lambda f: {"section": "far", "table": "far"}),
    **{
        f"manage/institutions/<int:pk>/{tail}": Route(pk("clinic"), method)
        for tail, method in (("", "get"), ("edit/", "get"), ("active/", "post"))
    },
    **{
        f"manage/institutions/<int:institution>/{kind}/add/": Route(lambda f: {"institution": f.clinic.pk})
        for kind in ("departments", "doctors", "pools", "devices")
    },
    "manage/departments/<int:pk>/": Route(pk("department")),
    "manage/departments/<int:pk>/active/": Route(pk("department"), "post"),
    "manage/doctors/<int:pk>/": Route(pk("owner")),
    "manage/doctors/<int:pk>/active/": Route(pk("owner"), "post"),
    "manage/doctors/<int:pk>/move/": Route(pk("owner")),
    "manage/doctors/<int:pk>/password/": Route(pk("owner")),
    "manage/pools/<int:pk>/": Route(pk("pool")),
    "manage/pools/<int:pk>/active/": Route(pk("pool"), "post"),
    "manage/devices/<int:pk>/": Route(pk("device")),
    "manage/devices/<int:pk>/active/": Route(pk("device"), "post"),
    # imaging pages
    "imaging/studies/<str:study_uid>/": Route(study, audited="study"),
    "imaging/studies/<str:study_uid>/series/<str:series_uid>/thumbnail.jpg": Route(
        lambda f: study(f) | {"series_uid": f.series.series_uid}, audited="series"
    ),
    "imaging/studies/<str:study_uid>/series/<str:series_uid>/instances/<str:sop_uid>/thumbnail.jpg": Route(
        lambda f: study(f) | {"series_uid": f.series.series_uid, "sop_uid": f.instance.sop_uid}, audited="series"
    ),
    "imaging/break-glass/reviews/<int:pk>/": Route(pk("review"), "post"),
    "imaging/patients/<int:pk>/correct/": Route(lambda f: {"pk": f.study.patient_id}),
    "imaging/studies/<str:study_uid>/delete/": Route(study, "post", audited="study"),
    "imaging/films/<int:pk>/slip.pdf": Route(lambda f: {"pk": f.film.link.pk}, audited="film"),
    "imaging/films/<int:pk>/revoke/": Route(lambda f: {"pk": f.film.link.pk}, "post", audited="film"),
    "imaging/worklist/<int:pk>/discontinue/": Route(pk("step"), audited="scheduled_step"),
    "viewer/study/<str:study_uid>/": Route(study, audited="study"),
    "viewer/study/<str:study_uid>/prior/<str:prior_uid>/": Route(
        lambda f: study(f) | {"prior_uid": f.study.study_uid}, audited="study"
    ),
    # DICOMweb
    **{D + tail: Route(lambda f: dw(f, "study"), audited="study") for tail in ("", "/metadata", "/thumbnail")},
    # QIDO-RS searches within a study: an empty result (204), as for a study that does not exist
    **{D + tail: Route(lambda f: dw(f, "study")) for tail in ("/series", "/instances")},
    S + "/instances": Route(lambda f: dw(f, "study", "series")),
    **{
        S + tail: Route(lambda f: dw(f, "study", "series"), audited="study") for tail in ("", "/metadata", "/thumbnail")
    },
    **{
        I + tail: Route(lambda f: dw(f, "study", "series", "instance"), audited="study")
        for tail in ("", "/metadata", "/rendered", "/thumbnail")
    },
    I + "/bulk/<str:tag>": Route(lambda f: dw(f, "study", "series", "instance", "tag"), audited="study"),
    I + "/frames/<str:frames>": Route(lambda f: dw(f, "study", "series", "instance", "frames"), audited="study"),
    I + "/frames/<str:frames>/rendered": Route(
        lambda f: dw(f, "study", "series", "instance", "frames"), audited="study"
    ),
    # consults
    "consults/templates/<int:pk>/": Route(pk("template")),
    "consults/notifications/<int:pk>/": Route(pk("consult_notice")),
    "consults/<int:pk>/": Route(pk("consult"), audited="consult"),
    "consults/<int:pk>/report/": Route(pk("consult"), audited="consult"),
    "consults/<int:pk>/report.pdf": Route(pk("consult"), audited="consult"),
    "consults/<int:pk>/messages/": Route(pk("consult"), "post", audited="consult"),
    "consults/<int:pk>/second-opinion/": Route(pk("consult"), "post", audited="consult"),
    "consults/<int:pk>/<slug:action>/": Route(lambda f: {"pk": f.consult.pk, "action": "cancel"}, "post", "consult"),
    # the patient's cloud film: a far link's pages ask for its check and show nothing else
    **{
        f"film/<str:key>/{tail}": Route(film)
        for tail in (
            "",
            "images.zip",
            "share/",
            "who/",
            "dicomweb/studies",
            "dicomweb/series",
            "dicomweb/instances",
        )
    },
    "film/<str:key>/leave/": Route(film, "post"),
    "film/<str:key>/study/<str:study_uid>/": Route(lambda f: film(f, study_uid=f.study.study_uid)),
    "film/<str:key>/report/<int:number>/": Route(lambda f: film(f, number=1)),
    "film/<str:key>/report/<int:number>.pdf": Route(lambda f: film(f, number=1)),
    "film/<str:key>/share/<int:pk>/revoke/": Route(lambda f: film(f, pk=f.film.link.pk), "post"),
    **{
        F + tail: Route(lambda f: film(f) | dw(f, "study"))
        for tail in ("", "/metadata", "/thumbnail", "/series", "/instances")
    },
    **{
        FS + tail: Route(lambda f: film(f) | dw(f, "study", "series"))
        for tail in ("", "/metadata", "/thumbnail", "/instances")
    },
    **{
        FI + tail: Route(lambda f: film(f) | dw(f, "study", "series", "instance"))
        for tail in ("", "/metadata", "/rendered", "/thumbnail")
    },
    FI + "/bulk/<str:tag>": Route(lambda f: film(f) | dw(f, "study", "series", "instance", "tag")),
    FI + "/frames/<str:frames>": Route(lambda f: film(f) | dw(f, "study", "series", "instance", "frames")),
    FI + "/frames/<str:frames>/rendered": Route(lambda f: film(f) | dw(f, "study", "series", "instance", "frames")),
    # referrals
    "referrals/notifications/<int:pk>/": Route(pk("referral_notice")),
    "referrals/desk/<int:doctor_pk>/remove/": Route(lambda f: {"doctor_pk": f.owner.pk}, "post"),
    "referrals/<int:pk>/": Route(pk("referral"), audited="referral"),
    "referrals/<int:pk>/slip.pdf": Route(pk("referral"), audited="referral"),
    "referrals/<int:pk>/messages/": Route(pk("referral"), "post", audited="referral"),
    "referrals/<int:pk>/exam/": Route(pk("referral"), audited="referral"),
    "referrals/<int:pk>/<slug:action>/": Route(lambda f: {"pk": f.referral.pk, "action": "cancel"}, "post", "referral"),
    # REST API
    **{
        f"api/v1/^{kind}/(?P<pk>[^/.]+)/$": Route(pk(attr))
        for kind, attr in (
            ("institutions", "clinic"),
            ("departments", "department"),
            ("pools", "pool"),
            ("doctors", "owner"),
            ("devices", "device"),
        )
    },
    **{
        f"api/v1/^doctors/(?P<pk>[^/.]+)/{verb}/$": Route(pk("owner"), "post")
        for verb in ("activate", "deactivate", "move")
    },
    "api/v1/studies/<str:study_uid>/": Route(study, audited="study"),
    "api/v1/studies/<str:study_uid>/series/": Route(study, audited="study"),
    "api/v1/films/<int:pk>/revoke/": Route(lambda f: {"pk": f.film.link.pk}, "post", audited="film"),
    "api/v1/series/<str:series_uid>/instances/": Route(lambda f: {"series_uid": f.series.series_uid}, audited="series"),
    "api/v1/break-glass/reviews/<int:pk>/": Route(pk("review"), "post"),
    "api/v1/worklist/<int:pk>/discontinue/": Route(pk("step"), "post", audited="scheduled_step"),
    "api/v1/consults/<int:pk>/": Route(pk("consult"), audited="consult"),
    "api/v1/consults/<int:pk>/report/draft/": Route(pk("consult"), "put", audited="consult"),
    "api/v1/consults/<int:pk>/messages/": Route(pk("consult"), audited="consult"),
    "api/v1/consults/<int:pk>/second-opinion/": Route(pk("consult"), "post", audited="consult"),
    "api/v1/consults/<int:pk>/<slug:action>/": Route(
        lambda f: {"pk": f.consult.pk, "action": "cancel"}, "post", "consult"
    ),
    "api/v1/referrals/<int:pk>/": Route(pk("referral"), audited="referral"),
    "api/v1/referrals/<int:pk>/messages/": Route(pk("referral"), audited="referral"),
    "api/v1/referrals/<int:pk>/<slug:action>/": Route(
        lambda f: {"pk": f.referral.pk, "action": "cancel"}, "post", "referral"
    ),
    # accounts and privilege changes (membership: refused unaudited)
    "account/tokens/<int:pk>/revoke/": Route(pk("token"), "post"),
    "api/v1/^tokens/(?P<pk>[^/.]+)/$": Route(pk("token"), "delete"),
    "manage/doctors/<int:pk>/second-factor/reset/": Route(pk("owner"), "post"),
    "manage/privileges/<int:pk>/": Route(pk("privilege")),
    "api/v1/^privilege-changes/(?P<pk>[^/.]+)/$": Route(pk("privilege")),
    **{
        f"api/v1/^privilege-changes/(?P<pk>[^/.]+)/{verb}/$": Route(pk("privilege"), "post")
        for verb in ("approve", "refuse")
    },
    # reading: signing, critical results, key objects, maintenance
    "consults/<int:pk>/sign/": Route(pk("consult"), audited="consult"),
    "consults/<int:pk>/critical/": Route(pk("consult"), "post", audited="consult"),
    "consults/<int:pk>/critical/<int:result_pk>/acknowledge/": Route(
        lambda f: {"pk": f.consult.pk, "result_pk": f.critical.pk}, "post", audited="consult"
    ),
    "consults/critical-findings/<int:pk>/": Route(pk("finding")),
    "api/v1/consults/<int:pk>/critical/": Route(pk("consult"), audited="consult"),
    "api/v1/consults/<int:pk>/critical/<int:result_pk>/acknowledge/": Route(
        lambda f: {"pk": f.consult.pk, "result_pk": f.critical.pk}, "post", audited="consult"
    ),
    "api/v1/studies/<str:study_uid>/key-objects/": Route(study, audited="study"),
    "api/v1/series/<str:series_uid>/move/": Route(lambda f: {"series_uid": f.series.series_uid}, "post"),
    "imaging/studies/<str:study_uid>/series/<str:series_uid>/move/": Route(
        lambda f: study(f) | {"series_uid": f.series.series_uid}, audited="study"
    ),
    # teaching cases: a published case of another alliance is no more theirs than its draft
    **{
        f"teaching/<int:pk>/{tail}": Route(pk("teaching_case"), method)
        for tail, method in (
            ("", "get"),
            ("answer/", "post"),
            ("comments/", "post"),
            ("thumbnail.jpg", "get"),
            ("edit/", "get"),
            ("confirm/", "post"),
            ("remove-series/", "post"),
            ("publish/", "post"),
            ("unpublish/", "post"),
            ("discard/", "post"),
        )
    },
    **{
        f"teaching/<int:pk>/images/<int:image_pk>/{tail}": Route(
            lambda f: {"pk": f.teaching_case.pk, "image_pk": f.teaching_image.pk}, method
        )
        for tail, method in (("preview.jpg", "get"), ("mask/", "post"))
    },
    **{
        f"teaching/<int:pk>/dicomweb/studies/<str:study>/{tail}": Route(teaching_dw)
        for tail in (
            "series",
            "series/<str:series>/instances",
            "series/<str:series>/metadata",
            "series/<str:series>/thumbnail",
            "series/<str:series>/instances/<str:instance>/metadata",
            "series/<str:series>/instances/<str:instance>/frames/<str:frames>",
            "series/<str:series>/instances/<str:instance>/rendered",
            "series/<str:series>/instances/<str:instance>/frames/<str:frames>/rendered",
            "series/<str:series>/instances/<str:instance>/thumbnail",
        )
    },
    # FHIR R4 (read by id; the searches are test_fhir_searches_find_nothing_of_another_alliance below)
    "fhir/ImagingStudy/<str:resource_id>": Route(lambda f: {"resource_id": f.study.study_uid}, audited="study"),
    "fhir/Patient/<str:resource_id>": Route(lambda f: {"resource_id": f.study.patient_id}, audited="patient"),
    "fhir/ServiceRequest/<str:resource_id>": Route(
        lambda f: {"resource_id": f"consult-{f.consult.pk}"}, audited="consult"
    ),
    "fhir/Task/<str:resource_id>": Route(lambda f: {"resource_id": f"referral-{f.referral.pk}"}, audited="referral"),
    "fhir/DiagnosticReport/<str:resource_id>": Route(
        lambda f: {"resource_id": f"consult-{f.consult.pk}"}, audited="consult"
    ),
    "fhir/Binary/<str:resource_id>": Route(lambda f: {"resource_id": f"consult-{f.consult.pk}"}, audited="consult"),
    "fhir/AuditEvent/<str:resource_id>": Route(lambda f: {"resource_id": f.audit_event.pk}),
    # routing (issue 18): the institution admin's console, "send to…" of a study and of a case
    "routing/items/<int:pk>/retry/": Route(pk("route_item"), "post"),
    "routing/destinations/<int:pk>/": Route(pk("route_destination")),
    "routing/destinations/<int:pk>/echo/": Route(pk("route_destination"), "post"),
    "routing/rules/<int:pk>/": Route(pk("route_rule")),
    "routing/rules/<int:pk>/delete/": Route(pk("route_rule"), "post"),
    "routing/studies/<str:study_uid>/send/": Route(study, "post", audited="study"),
    "consults/<int:pk>/route/": Route(pk("consult"), "post", audited="consult"),
    # a consult that asks for an exam (issue 18 item 2): the form, and posting it
    "consults/<int:pk>/exam/": Route(pk("consult"), "post", audited="consult"),
    "referrals/<int:pk>/route/": Route(pk("referral"), "post", audited="referral"),
    "api/v1/studies/<str:study_uid>/route/": Route(study, "post", audited="study"),
    "api/v1/routing/destinations/<int:pk>/": Route(pk("route_destination")),
    "api/v1/routing/rules/<int:pk>/": Route(pk("route_rule")),
    "api/v1/routing/queue/<int:pk>/retry/": Route(pk("route_item"), "post"),
    # screening programmes: a programme is membership (refused unaudited), a participant patient data
    **{
        f"screening/<int:pk>/{tail}": Route(pk("programme")) for tail in ("", "edit/", "enrol/", "overdue/", "figures/")
    },
    "screening/participants/<int:pk>/": Route(pk("participant"), audited="screening-participant"),
    "screening/participants/<int:pk>/withdraw/": Route(pk("participant"), audited="screening-participant"),
    **{
        f"screening/rounds/<int:pk>/{tail}": Route(pk("round"), method, audited="screening-participant")
        for tail, method in (("invite/", "post"), ("tag/", "post"), ("read/", "get"), ("sign/", "get"))
    },
    "screening/studies/<str:study_uid>/": Route(study, audited="study"),
}
# Routes left out, each with the reason.
EXEMPT = {
    "django-admin/": "Django's admin site: superusers only, guarded by its own permission checks",
}
FORMAT_SUFFIX = r"\.(?P<format>[a-z0-9]+)/?$"


def parameter_routes() -> Iterator[str]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if "<" in route or "(?P" in route:
                    yield route

    yield from walk(get_resolver().url_patterns, "")


def table_key(route: str) -> str | None:
    """The ROUTES entry a route is tested by (DRF's .json suffix variants by their plain one)."""
    if any(route.startswith(prefix) for prefix in EXEMPT):
        return None
    if route.endswith(FORMAT_SUFFIX) and "(?P<pk>" not in route.replace(FORMAT_SUFFIX, ""):
        return None  # a list's format suffix: no object parameter
    return route.replace(FORMAT_SUFFIX, "/$") if route.endswith(FORMAT_SUFFIX) else route


def test_every_route_with_a_parameter_is_in_the_table() -> None:
    missing = sorted({key for route in parameter_routes() if (key := table_key(route)) is not None} - set(ROUTES))
    assert not missing, "routes with no entry in ROUTES (add how to build their object):\n" + "\n".join(missing)


def test_every_schema_path_with_a_parameter_resolves_to_a_tabled_route() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    samples = {"pk": "1", "id": "1", "result_pk": "1", "study_uid": "1.2.3", "series_uid": "1.2.3", "action": "cancel"}
    tabled = {key for route in parameter_routes() if (key := table_key(route)) is not None}
    for path in schema["paths"]:
        if "{" not in path:
            continue
        concrete = path
        for name, value in samples.items():
            concrete = concrete.replace("{" + name + "}", value)
        assert "{" not in concrete, f"{path}: a parameter this test does not know"
        route = resolve(concrete).route  # as Django reports it: without a regex route's "^"
        assert route in {key.replace("/^", "/") for key in tabled & set(ROUTES)}, path


@pytest.fixture
def far(alliance_world: Any) -> SimpleNamespace:
    """An institution of another alliance, with one of everything: nobody of alliance_world may see any of it."""
    alliance = factories.AllianceFactory(name="Far Alliance")
    hosp = factories.make_institution(alliance=alliance, level="tertiary", name="Far Hospital", ae_title="FARHOSP")
    clinic = factories.make_institution(alliance=alliance, name="Far Clinic", ae_title="FARCLIN", parent=hosp)
    owner = factories.make_doctor(institution=clinic, username="far_owner")
    principal = resolve_principal(owner.user)
    study = store_ct_study(clinic, patient_id=FAR_PATIENT_ID, patient_name=FAR_NAME)
    series = study.series.get()
    pool = factories.make_pool(institution=hosp, name="Far desk")
    consult = consult_services.consult_create(
        by=principal,
        studies=[study],
        question="Far question?",
        history="",
        priority="routine",
        pool=pool,
        specialist=None,
    )
    referral = referral_services.referral_create(
        by=principal, studies=[study], direction="up", to_institution=hosp, reason="Far reason", urgency="routine"
    )
    now = timezone.now()
    services.token_create(doctor=owner, by=audit.SYSTEM)
    teaching_case = _far_teaching_case(clinic, study)
    destination = Destination.objects.create(
        institution=clinic, name="Far PACS", ae_title="FARPACS", host="h", port=104
    )
    programme = Programme.objects.create(alliance=alliance, name="Far screening", reading_pool=pool, created_by=owner)
    programme.institutions.set([clinic])
    participant = screening_services.participant_enrol(
        by=principal,
        programme=programme,
        patient=study.patient,
        consent_by="far",
        consent_at=now,
        consent_method="written",
    )
    screening_round = screening_services.round_tag(round_=participant.rounds.get(), study=study, by=principal)
    return SimpleNamespace(
        teaching_case=teaching_case,
        teaching_image=teaching_case.images.get(),
        audit_event=AuditEvent.objects.filter(actor_institution_id=clinic.pk).latest("pk"),
        route_destination=destination,
        route_rule=RouteRule.objects.create(institution=clinic, destination=destination, name="Far rule"),
        route_item=RouteItem.objects.create(destination=destination, study=study, state="failed"),
        programme=programme,
        participant=participant,
        round=screening_round,
        token=ApiToken.objects.filter(user=owner.user).first(),
        privilege=PrivilegeChange.objects.create(
            subject=owner, kind=PrivilegeChange.Kind.ROLES, payload={"roles": ["clinician"]}, requested_by=owner
        ),
        critical=CriticalResult.objects.create(consult=consult, text="Far finding", flagged_by=owner, flagged_at=now),
        finding=CriticalFinding.objects.create(alliance=alliance, modality="CT", name="Far finding"),
        clinic=clinic,
        owner=owner,
        study=study,
        series=series,
        instance=series.instances.get(),
        pool=pool,
        consult=consult,
        referral=referral,
        film=films.film_create(studies=[study], by=principal, verify="dob"),
        device=services.device_create(institution=clinic, ae_title="FARCT", host="*", port=104, by=audit.SYSTEM),
        step=worklist.schedule_step(
            by=principal.actor,
            institution=clinic,
            patient_id=FAR_PATIENT_ID,
            issuer=clinic,
            patient_name=FAR_NAME,
            birth_date=None,
            sex="",
            accession_number="FARACC",
            modality="CT",
            scheduled_at=now,
            station_ae="FARCT",
            procedure_description="Far CT",
            source="api",
        ),
        department=services.department_create(institution=clinic, name="Far radiology", by=audit.SYSTEM),
        template=ReportTemplate.objects.create(alliance=alliance, name="Far CT", modality="CT"),
        consult_notice=Notification.objects.create(user=owner.user, consult=consult, verb="requested", created_at=now),
        referral_notice=ReferralNotification.objects.create(
            user=owner.user, referral=referral, verb="requested", created_at=now
        ),
        review=BreakGlassReview.objects.create(
            study=study,
            owner_institution=clinic,
            user=owner.user,
            user_institution=clinic,
            reason="far",
            opened_at=now,
            expires_at=now,
        ),
    )


def _far_teaching_case(clinic: Any, study: Any) -> Any:
    """A published teaching case of the far alliance, made by a specialist of the far clinic."""
    from consults.teaching import diseases
    from consults.teaching import services as teaching_services
    from tests.teaching.conftest import ready

    diseases.ensure_kept_list()  # seeded by its migration; a transactional test before may have emptied it

    author = resolve_principal(factories.make_doctor(institution=clinic, roles=["specialist"]).user)
    series = [study.series.get().series_uid]
    case = teaching_services.case_create(by=author, study=study, series_uids=series, key_sop_uids=[], title="Far")
    return teaching_services.case_publish(case=ready(case, author), by=author)


def personas(world: Any) -> dict[str, Client]:
    clients = {"anonymous": Client()}
    for name in (
        "owner",
        "colleague",
        "specialist",
        "outsider_specialist",
        "stranger",
        "inst_admin_a",
        "hosp_admin",
        "alliance_admin",
    ):
        client = Client()
        client.force_login(getattr(world, name).user)
        clients[name] = client
    holder = Client()  # a patient's film link of clinic A, checked: sees that link's studies only
    made = films.film_create(
        studies=[store_ct_study(world.clin_a)], by=resolve_principal(world.owner.user), verify="dob"
    )
    assert holder.post(made.path, {"answer": "1960-01-01"}).status_code == 303
    clients["film_holder"] = holder
    return clients


def identifiers(far: Any) -> list[str]:
    return [FAR_PATIENT_ID, "FARAWAY", "SECRET", far.study.study_uid, far.series.series_uid, far.instance.sop_uid]


def url_of(route: str, kwargs: dict[str, Any]) -> str:
    url = route
    for name, value in kwargs.items():
        for pattern in (f"<str:{name}>", f"<int:{name}>", f"<slug:{name}>", f"(?P<{name}>[^/.]+)"):
            url = url.replace(pattern, str(value))
    url = "/" + url.replace("^", "").removesuffix("$")
    assert "<" not in url and "(?P" not in url, url
    return url


REFUSED = {403, 404}
NOT_SIGNED_IN = {302, 401, 403, 404}
FILM_CHECK = {200, 302, 401, 403, 404}  # a film link's own check page: nothing of the patient
# a QIDO-RS search within a study finds nothing (204 No Content), as in a missing study
QIDO_WITHIN = {204, 403, 404}


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_persona_gets_anything_of_another_alliance(route: str, alliance_world: Any, far: Any) -> None:
    entry = ROUTES[route]
    url = url_of(route, entry.kwargs(far))
    secrets = identifiers(far)
    for name, client in personas(alliance_world).items():
        response = getattr(client, entry.method)(url)
        allowed = (
            FILM_CHECK
            if route.startswith("film/")
            else NOT_SIGNED_IN
            if name in ("anonymous", "film_holder")
            else QIDO_WITHIN
            if route.startswith("dicomweb/") and route.endswith(("/series", "/instances"))
            else REFUSED
        )
        assert response.status_code in allowed, (name, url, response.status_code)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items() if k != "Location")
        for secret in secrets:
            assert secret.encode() not in body, (name, url, secret)
            assert secret not in headers, (name, url, secret)
        location = response.headers.get("Location", "")
        assert not any(s in location.split("?")[0] for s in secrets), (name, url, location)
    if entry.audited:
        denied = AuditEvent.objects.filter(
            outcome=AuditEvent.Outcome.DENIED, actor_name="stranger", object_type=entry.audited
        )
        assert denied.exists(), f"{route}: the stranger's refusal left no denied audit row"


FHIR_SEARCHES = ["ImagingStudy", "Patient", "ServiceRequest", "Task", "DiagnosticReport", "AuditEvent"]


@pytest.mark.django_db
@pytest.mark.parametrize("resource", FHIR_SEARCHES)
def test_fhir_searches_find_nothing_of_another_alliance(resource: str, alliance_world: Any, far: Any) -> None:
    """A search by the far patient's identifier (and one with no criteria) is an empty
    searchset for every persona, or refused for those not signed in."""
    from imaging.fhir.common import patient_system

    name = "identifier" if resource == "Patient" else "patient.identifier"
    queries = [{name: f"{patient_system('FARCLIN')}|{FAR_PATIENT_ID}"}, {name: FAR_PATIENT_ID}, {}]
    secrets = identifiers(far)
    for persona, client in personas(alliance_world).items():
        for query in queries:
            response = client.get(f"/fhir/{resource}", query)
            body = response.content  # a searchset's own links repeat the query the caller sent: not checked
            if persona in ("anonymous", "film_holder"):
                assert response.status_code == 401, (persona, resource, response.status_code)
            else:
                assert response.status_code == 200, (persona, resource, response.status_code)
                found = response.json()
                far_ids = {str(far.study.patient_id), far.study.study_uid, f"consult-{far.consult.pk}"}
                far_ids |= {f"referral-{far.referral.pk}", str(far.audit_event.pk)}
                assert not far_ids & {e["resource"]["id"] for e in found.get("entry", [])}, (persona, resource)
                body = json.dumps({k: v for k, v in found.items() if k != "link"}, ensure_ascii=False).encode()
            for secret in secrets:
                assert secret.encode() not in body, (persona, resource, query, secret)
