"""Routing pages: the queue (pending, sent, failed with the peer's answer, "retry now"), the
destinations and the rules of the institution the admin keeps, and "Send to…" of a study.

Decisions are imaging.routing.access's; writes are imaging.routing.services'. The queue
names studies (not patients): showing it is audited as a read of each study listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from alliance import audit
from alliance.access import AccessDenied, Principal, principal_of
from alliance.forms import apply_service_errors
from alliance.models import Institution
from imaging import access as imaging_access
from imaging.dicom import scu
from imaging.routing import access, services
from imaging.routing.forms import DestinationForm, QueueFilterForm, RuleForm, SendForm
from imaging.routing.models import Destination, State

ITEMS_PER_PAGE = 50


def _keeper(request: HttpRequest) -> tuple[Principal, Institution]:
    principal = principal_of(request)
    institution = access.routing_institution_of(principal)
    if institution is None:
        raise PermissionDenied
    return principal, institution


def _save(form: Any, write: Callable[[], Any]) -> Any:
    """A service write; its ValidationError shown on the form (None returned then)."""
    try:
        with transaction.atomic():
            return write()
    except ValidationError as exc:
        apply_service_errors(form, exc)
    except AccessDenied as exc:
        form.add_error(None, str(exc))
    return None


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    principal, institution = _keeper(request)
    destinations = access.destinations_managed_by(principal)
    form = QueueFilterForm(request.GET or None, destinations=destinations)
    items = access.queue_visible_to(principal)
    counts = dict(items.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    if form.is_valid():
        data = form.cleaned_data
        if data["state"]:
            items = items.filter(state=data["state"])
        if data["destination"]:
            items = items.filter(destination=data["destination"])
        if data["q"]:
            q = data["q"].strip()
            items = items.filter(
                Q(study__study_uid=q) | Q(study__accession_number__iexact=q) | Q(study__description__icontains=q)
            )
    page = Paginator(items.order_by("-updated_at", "-pk"), ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    studies = list({item.study_id: item.study for item in shown}.values())
    audit.read_many(request, studies, "route.queue.view", {s.pk: f"routing:{institution.pk}" for s in studies})
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "items": shown,
        "counts": [(state, label, counts.get(state, 0)) for state, label in State.choices],
        "query_string": params.urlencode(),
        "institution": institution,
        "has_destinations": destinations.exists(),
        "section": "queue",
    }
    return render(request, "routing/queue.html", context)


@login_required
@require_POST
def retry(request: HttpRequest, pk: int) -> HttpResponse:
    principal, _institution = _keeper(request)
    item = get_object_or_404(access.queue_visible_to(principal), pk=pk)
    try:
        services.retry_now(by=principal, item=item)
        messages.success(request, _("Queued again: %(study)s to %(name)s.") % _named(item))
    except services.IllegalMove as exc:
        messages.error(request, str(exc))
    back = request.POST.get("next", "")
    return redirect(back if _local(back) else "routing:queue")


def _local(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def _named(item: Any) -> dict[str, str]:
    return {"study": item.study.description or item.study.study_uid, "name": item.destination.name}


# --- destinations -------------------------------------------------------------------------


@login_required
@require_GET
def destinations(request: HttpRequest) -> HttpResponse:
    principal, institution = _keeper(request)
    rows = access.destinations_managed_by(principal).annotate(
        failed=Count("items", filter=Q(items__state=State.FAILED)),
        waiting=Count("items", filter=Q(items__state__in=[State.PENDING, State.SENDING])),
    )
    context = {"destinations": rows, "institution": institution, "section": "destinations"}
    return render(request, "routing/destinations.html", context)


@login_required
def destination_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    principal, institution = _keeper(request)
    destination = get_object_or_404(access.destinations_managed_by(principal), pk=pk) if pk else None
    form = DestinationForm(request.POST or None, instance=destination)
    if request.method == "POST" and form.is_valid():
        values = {name: form.cleaned_data[name] for name in DestinationForm.Meta.fields}
        saved = _save(
            form,
            lambda: services.destination_save(
                by=principal, institution=institution, values=values, token=form.token_change(), destination=destination
            ),
        )
        if saved is not None:
            messages.success(request, _("Destination %(name)s saved.") % {"name": saved.name})
            return redirect("routing:destinations")
    title = _("Edit destination %(name)s") % {"name": destination.name} if destination else _("Add a destination")
    context = {
        "form": form,
        "title": title,
        "destination": destination,
        "institution": institution,
        "section": "destinations",
    }
    return render(request, "routing/form.html", context)


@login_required
@require_POST
def destination_echo(request: HttpRequest, pk: int) -> HttpResponse:
    """C-ECHO the destination (DICOM ones): whether it answers, now."""
    principal, _institution = _keeper(request)
    destination = get_object_or_404(access.destinations_managed_by(principal), pk=pk, kind=Destination.Kind.DIMSE)
    peer = scu.PeerAE(
        destination.ae_title, destination.host, int(destination.port or 104), destination.our_ae_title, 10.0
    )
    ok, detail = scu.echo(peer)
    audit.record(
        actor=principal.actor,
        action="route.echo",
        object_type="route-destination",
        object_id=destination.pk,
        source=audit.source_of(request),
        detail={"ok": ok, "answer": detail},
    )
    if ok:
        messages.success(request, _("%(name)s answers (%(detail)s).") % {"name": destination.name, "detail": detail})
    else:
        messages.error(
            request, _("%(name)s does not answer: %(detail)s") % {"name": destination.name, "detail": detail}
        )
    return redirect("routing:destinations")


# --- rules --------------------------------------------------------------------------------


@login_required
@require_GET
def rules(request: HttpRequest) -> HttpResponse:
    principal, institution = _keeper(request)
    context = {
        "rules": access.rules_managed_by(principal),
        "has_destinations": access.destinations_managed_by(principal).filter(active=True).exists(),
        "institution": institution,
        "section": "rules",
    }
    return render(request, "routing/rules.html", context)


@login_required
def rule_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    principal, institution = _keeper(request)
    rule = get_object_or_404(access.rules_managed_by(principal), pk=pk) if pk else None
    destinations = access.destinations_managed_by(principal)
    form = RuleForm(request.POST or None, instance=rule, principal=principal, destinations=destinations)
    if request.method == "POST" and form.is_valid():
        values = {name: form.cleaned_data[name] for name in RuleForm.Meta.fields}
        saved = _save(form, lambda: services.rule_save(by=principal, institution=institution, values=values, rule=rule))
        if saved is not None:
            messages.success(request, _("Rule %(name)s saved.") % {"name": saved.name})
            return redirect("routing:rules")
    title = _("Edit rule %(name)s") % {"name": rule.name} if rule else _("Add a rule")
    context = {"form": form, "title": title, "rule": rule, "institution": institution, "section": "rules"}
    return render(request, "routing/form.html", context)


@login_required
@require_POST
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    principal, _institution = _keeper(request)
    rule = get_object_or_404(access.rules_managed_by(principal), pk=pk)
    if request.POST.get("confirm") != "1":
        messages.error(request, _("Confirm to delete the rule."))
        return redirect("routing:rule_edit", pk=rule.pk)
    services.rule_delete(by=principal, rule=rule)
    messages.success(request, _("Rule %(name)s deleted.") % {"name": rule.name})
    return redirect("routing:rules")


# --- "Send to…" of a study ------------------------------------------------------------------


def send_form_for(principal: Principal, study: Any) -> SendForm | None:
    """The study page's "Send to…" form, when the user may send the study somewhere."""
    offered = access.destinations_for_study(principal, study)
    if not offered:
        return None
    return SendForm(destinations=Destination.objects.filter(pk__in=[d.pk for d in offered]))


@login_required
@require_POST
def send_study(request: HttpRequest, study_uid: str) -> HttpResponse:
    principal = principal_of(request)
    study = imaging_access.get_study_for(principal, study_uid)
    offered = access.destinations_for_study(principal, study)
    form = SendForm(request.POST, destinations=Destination.objects.filter(pk__in=[d.pk for d in offered]))
    if not form.is_valid():
        messages.error(request, _("Choose one of the destinations offered."))
        return redirect("imaging:study_detail", study_uid=study.study_uid)
    destination = form.cleaned_data["destination"]
    try:
        item = services.route_study(by=principal, study=study, destination=destination)
    except AccessDenied as exc:
        messages.error(request, str(exc))
    else:
        if item is None:
            messages.info(request, _("The study is on its way to %(name)s already.") % {"name": destination.name})
        else:
            messages.success(request, _("The study is queued for %(name)s.") % {"name": destination.name})
    return redirect("imaging:study_detail", study_uid=study.study_uid)
