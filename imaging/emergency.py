"""Break-glass pages (issue 16, item 5): open a study outside one's grants in an emergency,
and the owning institution admin's review queue. The rules are imaging.access's; the
writes imaging.grants' (break_glass, break_glass_review)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from alliance import audit
from alliance.access import AccessDenied, Principal, principal_of, settings_of
from alliance.forms import apply_service_errors, error_text
from imaging import access, grants
from imaging.forms import BreakGlassForm, BreakGlassReviewForm
from imaging.models import BreakGlassReview, Study

REVIEWED_SHOWN = 50


def _hours(principal: Principal) -> int:
    return int(settings_of(principal.doctor.institution.alliance_id).break_glass_hours)  # type: ignore[union-attr]


def _open(request: HttpRequest, principal: Principal, form: BreakGlassForm, study: Study) -> HttpResponse | None:
    """Break the glass on the chosen study; None (with the error on the form) when refused."""
    if access.studies_visible_to(principal).filter(pk=study.pk).exists():
        messages.info(request, _("You can already see this study; no emergency access was needed."))
        return redirect("imaging:study_detail", study_uid=study.study_uid)
    try:
        review = grants.break_glass(
            by=principal, study=study, reason=form.cleaned_data["reason"], source=audit.source_of(request)
        )
    except ValidationError as exc:
        apply_service_errors(form, exc)
        return None
    except AccessDenied as exc:
        form.add_error("study", str(exc))
        return None
    until = timezone.localtime(review.expires_at).strftime("%Y-%m-%d %H:%M")
    messages.warning(request, _("Emergency access is open until %(until)s and recorded.") % {"until": until})
    return redirect("imaging:study_detail", study_uid=study.study_uid)


@login_required
def break_glass(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    if not access.may_break_glass(principal):
        raise PermissionDenied(_("Only clinicians and specialists use emergency access."))
    form = BreakGlassForm(request.POST or None, initial={"study": request.GET.get("study", "")})
    choices: list[Study] = []
    if request.method == "POST" and form.is_valid():
        found = form.matches(access.break_glass_studies_for(principal))
        chosen = request.POST.get("study_uid", "")
        if chosen:
            found = [s for s in found if s.study_uid == chosen]
        if not found:
            form.add_error("study", _("No study of another member of the alliance has this UID or accession number."))
        elif len(found) > 1:
            choices = found
        else:
            opened = _open(request, principal, form, found[0])
            if opened is not None:
                return opened
    context = {"form": form, "choices": choices, "hours": _hours(principal)}
    return render(request, "imaging/break_glass.html", context)


def _queue(request: HttpRequest) -> Any:
    principal = principal_of(request)
    reviews = access.break_glass_reviews_for(principal)
    if principal.doctor is None or not principal.has_role("institution_admin"):
        raise PermissionDenied(_("Institution admins review emergency access to their studies."))
    return reviews.select_related("study__patient", "user", "user_institution", "reviewed_by")


@login_required
def break_glass_reviews(request: HttpRequest) -> HttpResponse:
    reviews = _queue(request)
    pending = list(reviews.filter(state=BreakGlassReview.State.PENDING).order_by("opened_at"))
    reviewed = list(reviews.exclude(state=BreakGlassReview.State.PENDING).order_by("-reviewed_at")[:REVIEWED_SHOWN])
    studies = list({r.study_id: r.study for r in pending + reviewed}.values())
    audit.read_many(request, studies, "break-glass.queue", {s.pk: access.OWN_INSTITUTION for s in studies})
    context = {"pending": pending, "reviewed": reviewed, "now": timezone.now(), "form": BreakGlassReviewForm()}
    return render(request, "imaging/break_glass_reviews.html", context)


@require_POST
@login_required
def break_glass_review(request: HttpRequest, pk: int) -> HttpResponse:
    review = get_object_or_404(_queue(request), pk=pk)
    form = BreakGlassReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose approve or flag."))
        return redirect("imaging:break_glass_reviews")
    approve = form.cleaned_data["decision"] == "approve"
    try:
        grants.break_glass_review(
            by=principal_of(request), review=review, approve=approve, comment=form.cleaned_data["comment"]
        )
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, _("Approved.") if approve else _("Flagged; any access still open has ended."))
    return redirect("imaging:break_glass_reviews")
