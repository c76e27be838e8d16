"""REST API of the referrals under /api/v1/referrals/: the same access rules and services as the pages."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance import audit
from alliance.access import principal_of
from alliance.api.permissions import IsActiveDoctor
from alliance.models import Doctor, Institution
from referrals import access, selectors, services
from referrals.api import serializers as s
from referrals.models import Referral


class UsesReferrals(BasePermission):
    """The module switch (C11): with referrals off for the institution, the API refuses."""

    message = "Referrals are switched off for your institution (or your role does not refer patients)."

    def has_permission(self, request: Any, view: Any) -> bool:
        return access.may_use_referrals(principal_of(request))


PERMISSIONS = [IsActiveDoctor, UsesReferrals]


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The referral is not in a state that allows this."


def _run(call: Any) -> Any:
    """A wrong state is 409; AccessDenied and ValidationError are mapped by the project's
    one error handler (403, 400 naming the field)."""
    try:
        return call()
    except services.IllegalTransition as exc:
        raise Conflict(str(exc)) from None


def _detail(request: Request, referral: Referral, code: int = status.HTTP_200_OK) -> Response:
    principal = principal_of(request)
    referral = access.get_referral_for(principal, referral.pk)
    context = {"request": request, "case": selectors.case_detail(principal, referral)}
    return Response(s.ReferralDetailSerializer(referral, context=context).data, status=code)


def _bad(field: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({field: [message]})


BOX_PARAMETERS = [
    OpenApiParameter("box", str, enum=["outgoing", "incoming"], description="Which list (default outgoing)."),
    OpenApiParameter("tab", str, description="waiting, appointments, in_care, closed (outgoing also drafts)."),
    OpenApiParameter("patient", str, description="Patient name or ID (partial)."),
    OpenApiParameter("institution", int, description="The other side's institution id."),
    OpenApiParameter("direction", str, enum=["up", "down", "same"]),
    OpenApiParameter("date_from", OpenApiTypes.DATE),
    OpenApiParameter("date_to", OpenApiTypes.DATE),
]


class ReferralListCreate(ListAPIView):
    """GET: one tab of the outgoing or incoming list, with every tab's count. POST: a referral."""

    serializer_class = s.ReferralListSerializer
    permission_classes = PERMISSIONS

    def _box(self) -> str:
        box = self.request.query_params.get("box") or selectors.OUTGOING
        if box not in (selectors.OUTGOING, selectors.INCOMING):
            raise _bad("box", "Choose outgoing or incoming.")
        return box

    def get_queryset(self) -> QuerySet[Referral]:
        principal = principal_of(self.request)
        filters = self.request.query_params.dict()
        tab = filters.get("tab")
        box = self._box()
        if tab and tab not in selectors.tab_names(box):
            raise Http404("No such tab.")
        lister = selectors.outgoing_tabs if box == selectors.OUTGOING else selectors.incoming_tabs
        return lister(principal, filters)[1]

    def paginate_queryset(self, queryset: QuerySet[Referral]) -> list[Referral] | None:
        page = super().paginate_queryset(queryset)
        if page is None:
            return None
        shown = selectors.hydrate(page)
        # A list shows patients: one audit event per referral listed, in one insert.
        audit.record_many(
            read=True,
            actor=audit.actor_of(self.request),
            action="referral.list",
            object_type="referral",
            items=[(str(r.pk), str(r.patient_id), r.basis) for r in shown],
            source=audit.source_of(self.request),
        )
        return shown

    @extend_schema(parameters=BOX_PARAMETERS)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        box = self._box()
        response.data["box"] = box
        response.data["tab"] = selectors.current_tab(box, request.query_params.dict())
        response.data["counts"] = selectors.counts(principal_of(request))
        return response

    @extend_schema(request=s.ReferralCreateSerializer, responses={201: s.ReferralDetailSerializer})
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        data = s.ReferralCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        studies = list(access.studies_referable_by(principal).filter(study_uid__in=v["studies"]))
        if len(studies) != len(set(v["studies"])):
            raise _bad("studies", "You may only attach your own institution's studies.")
        to = Institution.objects.filter(ae_title=v["to_institution"].strip().upper()).first()
        if to is None:
            raise _bad("to_institution", f"No institution with AE title {v['to_institution']}.")
        based_on = None
        if v["based_on"] is not None:
            based_on = access.referrals_visible_to(principal).filter(pk=v["based_on"]).first()
            if based_on is None:
                raise _bad("based_on", f"No referral #{v['based_on']} that you may see.")
        consult = None
        if v["consult"] is not None:
            consult = apps.get_model("consults", "Consult").objects.filter(pk=v["consult"]).first()
            if consult is None:
                raise _bad("consult", f"No consult #{v['consult']}.")
        referral = _run(
            lambda: services.referral_create(
                by=principal,
                studies=studies,
                patient_data=v["patient"],
                direction=v["direction"],
                to_institution=to,
                reason=v["reason"],
                summary=v["summary"],
                urgency=v["urgency"],
                wished_date=v["wished_date"],
                based_on=based_on,
                consult=consult,
                send=v["send"],
            )
        )
        return _detail(request, referral, status.HTTP_201_CREATED)


class ReferralDetail(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ReferralDetailSerializer, operation_id="referrals_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        referral = access.get_referral_for(principal_of(request), pk)
        services.audit_read(request, referral)
        return _detail(request, referral)


class ReferralAction(APIView):
    """POST /api/v1/referrals/<id>/<action>/ for every move of the workflow."""

    permission_classes = PERMISSIONS

    @extend_schema(
        request=s.ReferralActionSerializer, responses=s.ReferralDetailSerializer, operation_id="referrals_action"
    )
    def post(self, request: Request, pk: int, action: str) -> Response:
        principal = principal_of(request)
        referral = access.get_referral_for(principal, pk)
        body = s.ReferralActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data

        def doctor() -> Doctor | None:
            if d["doctor"] is None:
                return None
            found = Doctor.objects.filter(pk=d["doctor"]).first()
            if found is None:
                raise _bad("doctor", f"No doctor with id {d['doctor']}.")
            return found

        calls = {
            "request": lambda: services.referral_request(referral=referral, by=principal),
            "accept": lambda: services.referral_accept(
                referral=referral,
                by=principal,
                appointment_at=d["appointment_at"],
                department=d["department"],
                doctor=doctor(),
            ),
            "propose": lambda: services.referral_propose(
                referral=referral, by=principal, date=d["date"], note=d["note"]
            ),
            "agree": lambda: services.referral_agree(referral=referral, by=principal),
            "reject": lambda: services.referral_reject(referral=referral, by=principal, reason=d["reason"]),
            "arrive": lambda: services.referral_arrive(referral=referral, by=principal, patient_id=d["patient_id"]),
            "no-show": lambda: services.referral_no_show(referral=referral, by=principal, reason=d["reason"]),
            "complete": lambda: services.referral_complete(referral=referral, by=principal, summary=d["summary"]),
            "cancel": lambda: services.referral_cancel(referral=referral, by=principal, reason=d["reason"]),
        }
        if action not in calls:
            raise Http404("No such action.")
        _run(calls[action])
        return _detail(request, referral)


class Messages(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(responses=s.ReferralMessageSerializer(many=True), operation_id="referrals_messages_list")
    def get(self, request: Request, pk: int) -> Response:
        referral = access.get_referral_for(principal_of(request), pk)
        services.audit_read(request, referral)
        rows = referral.messages.select_related("author__user")
        return Response(s.ReferralMessageSerializer(rows, many=True).data)

    @extend_schema(
        request=s.ReferralMessageCreateSerializer,
        responses={201: s.ReferralMessageSerializer},
        operation_id="referrals_messages_create",
    )
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        referral = access.get_referral_for(principal, pk)
        body = s.ReferralMessageCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = services.referral_message(referral=referral, by=principal, body=body.validated_data["body"])
        return Response(s.ReferralMessageSerializer(message).data, status=status.HTTP_201_CREATED)


class Notifications(ListAPIView):
    serializer_class = s.ReferralNotificationSerializer
    permission_classes = PERMISSIONS

    def get_queryset(self) -> QuerySet[Any]:
        rows = selectors.notifications_of(self.request.user)
        return rows.filter(read_at__isnull=True) if self.request.query_params.get("unread") else rows

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        response.data["unread"] = selectors.unread_notifications(request.user).count()
        return response


class NotificationsRead(APIView):
    permission_classes = PERMISSIONS

    @extend_schema(
        request=s.ReferralNotificationsReadSerializer,
        responses=s.ReferralMarkedSerializer,
        operation_id="referrals_notifications_read",
    )
    def post(self, request: Request) -> Response:
        ids = request.data.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            raise _bad("ids", "A list of notification ids.")
        return Response({"marked": services.notifications_mark_read(user=request.user, ids=ids)})
