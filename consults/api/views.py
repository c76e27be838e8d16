"""REST API of the consults under /api/v1/consults/: the same access rules and services as the pages."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from alliance.access import AccessDenied, principal_of
from alliance.models import Doctor, Pool
from alliance.reauth import IdentityNotConfirmed
from consults import access, priorities, selectors, services
from consults.api import serializers as s
from consults.models import Consult


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The consult is not in a state that allows this."


class SignatureRefused(exceptions.APIException):
    """The password given with a signature did not confirm the signer (codes: password_missing,
    password_wrong, account_locked); nothing was signed."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "password_wrong"


REFUSAL_CODES = {"missing": "password_missing", "wrong": "password_wrong", "locked": "account_locked"}


def _run(call: Any) -> Any:
    """Service errors keep their meaning: a wrong state is 409; AccessDenied and
    ValidationError are mapped by the project's one error handler (403, 400 with fields);
    a signature whose password is missing or wrong is 403 with its own code."""
    try:
        return call()
    except services.IllegalTransition as exc:
        raise Conflict(str(exc)) from None
    except IdentityNotConfirmed as exc:
        code = REFUSAL_CODES.get(exc.reason, "password_wrong")
        raise SignatureRefused(services.refusal_text(exc), code=code) from None


def _detail(request: Request, consult: Consult, code: int = status.HTTP_200_OK) -> Response:
    consult = access.get_consult_for(principal_of(request), consult.pk)
    context = {"request": request, "case": selectors.case_detail(consult)}
    return Response(s.ConsultDetailSerializer(consult, context=context).data, status=code)


def _target(model: Any, pk: int | None, field: str) -> Any:
    if pk is None:
        return None
    found = model.objects.filter(pk=pk).first()
    if found is None:
        raise exceptions.ValidationError({field: [f"No {field} with id {pk}."]})
    return found


class ConsultListCreate(ListAPIView):
    """GET: one worklist tab (?tab=; the first of the user's tabs by default). POST: a request."""

    serializer_class = s.ConsultListSerializer

    def get_queryset(self) -> QuerySet[Consult]:
        principal = principal_of(self.request)
        tabs = selectors.worklist_tabs(principal)
        tab = self.request.query_params.get("tab") or selectors.default_tab(tabs)
        if tab not in tabs:
            raise Http404("No such tab.")
        return selectors.worklist(principal, tab)

    def paginate_queryset(self, queryset: QuerySet[Consult]) -> list[Consult] | None:
        page = super().paginate_queryset(queryset)
        return None if page is None else selectors.hydrate(page)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        response.data["counts"] = selectors.worklist_counts(principal_of(request))
        return response

    @extend_schema(request=s.ConsultCreateSerializer, responses={201: s.ConsultDetailSerializer})
    def post(self, request: Request) -> Response:
        principal = principal_of(request)
        data = s.ConsultCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        studies = list(access.studies_requestable_by(principal).filter(study_uid__in=v["studies"]))
        if len(studies) != len(set(v["studies"])):
            raise exceptions.ValidationError({"studies": ["You may only attach your own institution's studies."]})
        consult = services.consult_create(
            by=principal,
            studies=studies,
            question=v["question"],
            history=v["history"],
            priority=v["priority"],
            pool=_target(Pool, v["pool"], "pool"),
            specialist=_target(Doctor, v["specialist"], "specialist"),
        )
        if v["send"]:
            consult = services.consult_request(consult=consult, by=principal)
        return _detail(request, consult, status.HTTP_201_CREATED)


class ConsultDetail(APIView):
    @extend_schema(responses=s.ConsultDetailSerializer, operation_id="consults_retrieve")
    def get(self, request: Request, pk: int) -> Response:
        consult = access.get_consult_for(principal_of(request), pk)
        services.audit_read(request, consult)
        return _detail(request, consult)


class ConsultAction(APIView):
    """POST /api/v1/consults/<id>/<action>/ for every move of the workflow."""

    @extend_schema(request=s.ActionSerializer, responses=s.ConsultDetailSerializer, operation_id="consults_action")
    def post(self, request: Request, pk: int, action: str) -> Response:
        principal = principal_of(request)
        if action == "claim":
            consult = access.get_consult_to_claim(principal, pk)
        else:
            consult = access.get_consult_for(principal, pk)
        body = s.ActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        calls = {
            "request": lambda: services.consult_request(consult=consult, by=principal),
            "claim": lambda: services.consult_claim(consult=consult, by=principal),
            "reject": lambda: services.consult_reject(consult=consult, by=principal, reason=d["reason"]),
            "release": lambda: services.consult_release(consult=consult, by=principal, reason=d["reason"]),
            "start-report": lambda: services.consult_start_report(consult=consult, by=principal),
            "hold": lambda: services.consult_hold(consult=consult, by=principal, question=d["question"]),
            "answer": lambda: services.consult_answer(consult=consult, by=principal, answer=d["answer"]),
            "sign": lambda: services.consult_sign_confirmed(
                request=request,
                consult=consult,
                by=principal,
                secret=d["password"],
                findings=d["findings"],
                impression=d["impression"],
                recommendation=d["recommendation"],
            ),
            "addendum": lambda: services.consult_addendum(consult=consult, by=principal, text=d["addendum"]),
            "cancel": lambda: services.consult_cancel(consult=consult, by=principal, reason=d["reason"]),
            "fail": lambda: services.consult_fail(consult=consult, by=principal, reason=d["reason"]),
            "verify": lambda: services.consult_verify_confirmed(
                request=request, consult=consult, by=principal, secret=d["password"]
            ),
            "return-report": lambda: services.consult_return_report(
                consult=consult, by=principal, comments=d["comments"]
            ),
        }
        if action not in calls:
            raise Http404("No such action.")
        if action == "sign" and not access.may_sign(principal, consult):
            # Refused before the password is checked: a signature that cannot be given costs no attempt.
            raise AccessDenied(_("Only the owner signs the report of a case in progress."))
        _run(calls[action])
        if not access.consults_visible_to(principal).filter(pk=consult.pk).exists():
            return Response({"id": consult.pk, "status": Consult.objects.get(pk=consult.pk).status})
        return _detail(request, consult)


class ReportDraft(APIView):
    """PUT: the owner's draft autosave. GET: the draft (owner) or nothing."""

    @extend_schema(request=s.DraftSerializer, responses=s.VersionSerializer, operation_id="consults_report_draft")
    def put(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        consult = access.get_consult_for(principal, pk)
        body = s.DraftSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = _run(lambda: services.consult_save_draft(consult=consult, by=principal, **body.validated_data))
        return Response(s.VersionSerializer(version).data)


class Messages(APIView):
    @extend_schema(responses=s.MessageSerializer(many=True), operation_id="consults_messages_list")
    def get(self, request: Request, pk: int) -> Response:
        consult = access.get_consult_for(principal_of(request), pk)
        services.audit_read(request, consult)
        rows = consult.messages.select_related("author__user")
        return Response(s.MessageSerializer(rows, many=True).data)

    @extend_schema(
        request=s.MessageCreateSerializer, responses={201: s.MessageSerializer}, operation_id="consults_messages_create"
    )
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        consult = access.get_consult_for(principal, pk)
        message = services.consult_post_message(consult=consult, by=principal, body=str(request.data.get("body", "")))
        return Response(s.MessageSerializer(message).data, status=status.HTTP_201_CREATED)


class SecondOpinion(APIView):
    @extend_schema(request=s.SecondOpinionSerializer, responses={201: s.ConsultDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        consult = access.get_consult_for(principal, pk)
        body = s.SecondOpinionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        new = _run(
            lambda: services.consult_second_opinion(
                consult=consult,
                by=principal,
                pool=_target(Pool, v["pool"], "pool"),
                specialist=_target(Doctor, v["specialist"], "specialist"),
                question=v["question"],
                priority=v["priority"],
            )
        )
        return _detail(request, new, status.HTTP_201_CREATED)


class Notifications(ListAPIView):
    serializer_class = s.NotificationSerializer

    def get_queryset(self) -> QuerySet[Any]:
        rows = selectors.notifications_of(principal_of(self.request))
        return rows.filter(read_at__isnull=True) if self.request.query_params.get("unread") else rows

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        response.data["unread"] = selectors.unread_count(request.user)
        return response


class NotificationsRead(APIView):
    @extend_schema(request=s.NotificationsReadSerializer, responses=s.MarkedSerializer)
    def post(self, request: Request) -> Response:
        ids = request.data.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            raise exceptions.ValidationError({"ids": ["A list of notification ids."]})
        return Response({"marked": services.notifications_mark_read(user=request.user, ids=ids)})


class Policies(APIView):
    """The alliance's deadline and claim timeout per priority (GET for everyone, PUT by the alliance admin)."""

    @extend_schema(responses=s.PolicySerializer(many=True))
    def get(self, request: Request) -> Response:
        keys = ("priority", "deadline_minutes", "claim_timeout_minutes")
        out = [{k: row[k] for k in keys} for row in priorities.policy_table(principal_of(request).alliance)]
        return Response(out)

    @extend_schema(request=s.PolicySerializer, responses=s.PolicySerializer)
    def put(self, request: Request) -> Response:
        body = s.PolicySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        policy = services.policy_set(by=principal_of(request), **body.validated_data)
        return Response(s.PolicySerializer(policy).data)
