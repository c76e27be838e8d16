"""The teaching pages: the library, a case (with its quiz and thread), making and editing a
case, and the institution admin's continuing-education counts.

Every page asks consults.teaching.access who may see what and writes through
consults.teaching.services. A case's images reach the study viewer through the case's own
DICOMweb (consults.teaching.dicomweb).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from pydicom import dcmread

from alliance import audit
from alliance.access import AccessDenied, Principal, principal_of
from consults import access as consults_access
from consults.teaching import access, dicomweb, selectors, services
from consults.teaching.forms import CaseForm, CommentForm, MaskForm, NewCaseForm, SearchForm, UnpublishForm
from consults.teaching.models import Disease, TeachingCase, TeachingImage
from imaging import access as imaging_access
from imaging import key_objects, storage
from imaging import render as rendering
from imaging.dicomweb import dicomjson
from imaging.models import NON_IMAGE_MODALITIES, Instance, Study
from imaging.viewer.views import bundle_preload, viewer_strings

PAGE_SIZE = 20


def _user_may_use(principal: Principal) -> None:
    if not access.may_use_teaching(principal):
        raise Http404("No teaching cases here.")


def _form_errors(form: Form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


# --- the library ---------------------------------------------------------------------------


@login_required
@require_GET
def library(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    _user_may_use(principal)
    form = SearchForm(request.GET or None, diseases=selectors.active_diseases())
    page = Paginator(selectors.library(principal, form.to_search()), PAGE_SIZE).get_page(request.GET.get("page"))
    cases = list(page.object_list)
    if cases:
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action="teaching.list",
            object_type=TeachingCase.audit_type,
            items=[(str(c.pk), "", access.LIBRARY_BASIS) for c in cases],
            source=audit.source_of(request),
        )
        dicomweb.remember(request, cases)
    attempts = selectors.attempts_of(principal, cases)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "rows": [(case, attempts.get(case.pk)) for case in cases],
        "score": selectors.score_of(principal),
        "query": query.urlencode(),
        "may_author": access.may_author(principal),
        "may_see_learning": access.may_see_learning(principal),
        "mine": access.authored_by(principal).count(),
    }
    return render(request, "teaching/library.html", context)


@login_required
@require_GET
def mine(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    _user_may_use(principal)
    cases = access.authored_by(principal).order_by("-updated_at", "-pk")
    return render(request, "teaching/mine.html", {"cases": cases, "may_author": access.may_author(principal)})


@login_required
@require_GET
def next_quiz(request: HttpRequest) -> HttpResponse:
    """Quiz mode: the next published quiz the doctor has not answered, or a page saying so."""
    principal = principal_of(request)
    _user_may_use(principal)
    found = selectors.next_quiz(principal)
    if found is not None:
        return redirect("teaching:case", pk=found.pk)
    return render(request, "teaching/no_quiz.html", {"score": selectors.score_of(principal)})


@login_required
@require_GET
def learning(request: HttpRequest) -> HttpResponse:
    """Who of the admin's institution learned what: cases opened, quizzes answered, the score."""
    principal = principal_of(request)
    if not access.may_see_learning(principal):
        return HttpResponseForbidden(_("This page is for institution admins."))
    rows = selectors.learning_of(principal)
    return render(request, "teaching/learning.html", {"rows": rows, "institution": principal.institution})


# --- a case ------------------------------------------------------------------------------------


@login_required
@require_GET
def case(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    services.case_viewed(case=found, by=principal, source=audit.source_of(request), via="page")
    dicomweb.remember(request, [found])
    attempt = selectors.attempt_of(principal, found)
    is_author = principal.doctor is not None and found.author_id == principal.doctor.pk
    revealed = is_author or not found.has_quiz or attempt is not None
    may_discuss = revealed and access.may_discuss(principal, found)
    context = {
        "case": found,
        "is_author": is_author,
        "attempt": attempt,
        "revealed": revealed,
        "choices": selectors.quiz_choices(found) if found.has_quiz else [],
        "may_quiz": not revealed and access.may_take_quiz(principal, found),
        "diseases": list(found.diseases.all()),
        "thread": list(selectors.thread_of(found)) if revealed else [],
        "comment_form": CommentForm() if may_discuss else None,
        "may_edit": access.may_edit(principal, found),
        "may_unpublish": access.may_unpublish(principal, found),
        "unpublish_form": UnpublishForm(),
        "viewer_config": viewer_config_for(found),
        "preload": bundle_preload(),
        "score": selectors.score_of(principal),
    }
    return render(request, "teaching/case.html", context)


def viewer_config_for(case: TeachingCase) -> dict[str, Any] | None:
    """The study viewer's config (imaging.viewer.views.viewer_config's keys) for the case's
    copies: opened on its first key image, no patient, no priors, no key-image saving."""
    images = list(case.images.order_by("series_number", "series_uid", "instance_number", "pk"))
    if not images:
        return None
    start = next((i for i in images if i.is_key), images[0])
    series = [i for i in images if i.series_uid == start.series_uid]
    strings = {**viewer_strings(), "priors": _("This case"), "no_priors": _("A teaching case has no prior studies.")}
    return {
        "study_uid": start.study_uid,
        "dicomweb": dicomweb.dicomweb_root(case),
        "layout": "auto",
        "patient": {"name": _("Teaching case #%(n)s") % {"n": case.pk}, "id": "", "sex_birth": ""},
        "study": {"institution": "", "description": case.title[:64], "date": ""},
        "strings": strings,
        "first": {
            "uid": start.series_uid,
            "number": start.series_number,
            "modality": start.modality,
            "description": start.series_description,
            "count": len(series),
            "first_sop_uid": series[0].sop_uid,
            "first_metadata": _metadata(case, series[0]),
        },
        "start_sop_uid": start.sop_uid,
        "priors": [],
    }


def _metadata(case: TeachingCase, image: TeachingImage) -> dict[str, Any] | None:
    """The first slice's DICOM JSON, embedded so that its pixels are asked for at once."""
    url = (
        f"{dicomweb.absolute_root(case)}/studies/{image.study_uid}/series/{image.series_uid}/instances/{image.sop_uid}"
    )
    try:
        with storage.open_instance(image) as handle:  # type: ignore[arg-type]
            ds = dcmread(handle, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - a file gone or unreadable: the viewer asks for it itself
        return None
    return dicomjson.dataset_json(ds, url, has_pixels=image.rows is not None)


@login_required
@require_POST
def answer(request: HttpRequest, pk: int) -> HttpResponse:
    """The doctor's answer to the quiz, or their wish to see the answer without answering."""
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    choice = None
    if "reveal" not in request.POST:
        number = _int(request.POST.get("choice"))
        choice = Disease.objects.filter(pk=number).first() if number is not None else None
        if choice is None:
            messages.error(request, _("Choose an answer first."))
            return redirect("teaching:case", pk=found.pk)
    try:
        attempt = services.quiz_answer(case=found, by=principal, choice=choice)
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
        return redirect("teaching:case", pk=found.pk)
    if attempt.correct:
        messages.success(request, _("Right!"))
    elif attempt.choice is not None:
        messages.warning(request, _("Not this time: see the answer below."))
    return redirect(reverse("teaching:case", args=[found.pk]) + "#answer")


@login_required
@require_POST
def comment(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    form = CommentForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        services.comment_post(case=found, by=principal, body=form.cleaned_data["body"])
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
    return redirect(reverse("teaching:case", args=[found.pk]) + "#thread")


@login_required
@require_GET
def thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    """The case's picture in the library: its first key image, else the middle of its first series."""
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    image = _representative(found)
    if image is None:
        raise Http404("The case has no images.")
    try:
        jpeg = rendering.thumbnail(image)  # type: ignore[arg-type]
    except (rendering.RenderError, OSError):
        raise Http404("No thumbnail could be made.") from None
    if not dicomweb.covered(request, found):
        audit.read(request, found, "teaching.thumbnail", access.LIBRARY_BASIS)
    response = HttpResponse(jpeg, content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _representative(case: TeachingCase) -> TeachingImage | None:
    key = case.images.filter(is_key=True).order_by("series_number", "instance_number", "pk").first()
    if key is not None:
        return key
    first = case.images.order_by("series_number", "series_uid").first()
    if first is None:
        return None
    series = list(case.images.filter(series_uid=first.series_uid).order_by("instance_number", "pk"))
    return series[len(series) // 2]


# --- making and editing a case ------------------------------------------------------------


@login_required
def new(request: HttpRequest) -> HttpResponse:
    """Step one: which study (of a consult, or given) and which of its images the case copies."""
    principal = principal_of(request)
    if not access.may_author(principal):
        return HttpResponseForbidden(_("Specialists make teaching cases."))
    study_uid = request.POST.get("study") or request.GET.get("study")
    if not study_uid and request.GET.get("consult"):
        consult = consults_access.get_consult_for(principal, request.GET["consult"])
        studies = list(imaging_access.studies_visible_to(principal).filter(consults=consult).select_related("patient"))
        if len(studies) == 1:
            return redirect(reverse("teaching:new") + f"?study={studies[0].study_uid}")
        return render(request, "teaching/pick_study.html", {"consult": consult, "studies": studies})
    if not study_uid:
        raise Http404("Choose a study.")
    study = access.get_source_study(principal, study_uid)
    series, keys = _image_choices(request, study)
    form = NewCaseForm(request.POST or None, series=series, keys=keys, initial={"keys": [uid for uid, _label in keys]})
    if request.method == "POST" and form.is_valid():
        try:
            made = services.case_create(
                by=principal,
                study=study,
                series_uids=form.cleaned_data["series"],
                key_sop_uids=form.cleaned_data["keys"],
                title=form.cleaned_data["title"],
            )
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Draft case made with de-identified copies of the images."))
            return redirect("teaching:edit", pk=made.pk)
    audit.read(request, study, "study.view", imaging_access.basis_for(principal, study), via="teaching-new")
    return render(request, "teaching/new.html", {"form": form, "study": study, "has_keys": bool(keys)})


def _image_choices(request: HttpRequest, study: Study) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(series UID, label) of the study's image series, and (SOP Instance UID, label) of the
    author's own key images in it."""
    image_series = study.series.exclude(modality__in=NON_IMAGE_MODALITIES).filter(num_instances__gt=0)
    series = [
        (
            s.series_uid,
            _("Series %(number)s · %(modality)s %(description)s · %(count)s images")
            % {
                "number": s.series_number or "?",
                "modality": s.modality,
                "description": s.description,
                "count": s.num_instances,
            },
        )
        for s in image_series.order_by("series_number", "pk")
    ]
    marked = key_objects.key_objects_of(study, request.user.pk)["key_images"]
    instances = {
        i.sop_uid: i for i in Instance.objects.filter(series__study=study, sop_uid__in=marked).select_related("series")
    }
    keys = [
        (
            uid,
            _("Series %(series)s, image %(number)s")
            % {"series": instances[uid].series.series_number or "?", "number": instances[uid].instance_number or "?"},
        )
        for uid in marked
        if uid in instances
    ]
    return series, keys


def _editable_case(request: HttpRequest, pk: int) -> tuple[Principal, TeachingCase]:
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    if not access.may_edit(principal, found):
        raise Http404("No such draft.")
    return principal, found


@login_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    if not access.may_edit(principal, found):
        if found.author_id == getattr(principal.doctor, "pk", None):
            messages.info(request, _("Withdraw the case from the library to edit it."))
            return redirect("teaching:case", pk=found.pk)
        raise Http404("No such draft.")
    diseases = selectors.active_diseases()
    form = CaseForm(request.POST or None, diseases=diseases, initial=CaseForm.initial_of(found))
    if request.method == "POST" and form.is_valid():
        try:
            services.case_update(case=found, by=principal, **form.cleaned_data)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, _("Saved."))
            return redirect("teaching:edit", pk=found.pk)
    if request.method == "GET":
        services.case_viewed(case=found, by=principal, source=audit.source_of(request), via="edit")
        dicomweb.remember(request, [found])
    context = {
        "case": found,
        "form": form,
        "series": selectors.series_of(found),
        "flagged": _flagged_by_series(found),
        "mask_form": MaskForm(),
        "problems": [(_label(form, field), problem) for field, problem in services.publish_problems(found).items()],
        "may_discard": access.may_discard(principal, found),
    }
    return render(request, "teaching/edit.html", context)


def _flagged_by_series(case: TeachingCase) -> list[tuple[str, list[TeachingImage], int]]:
    """The images flagged for burned-in text, by series: (series UID, images, how many wait for a check)."""
    flagged = case.images.exclude(burned_in="").order_by("series_number", "series_uid", "instance_number", "pk")
    groups: dict[str, list[TeachingImage]] = {}
    for image in flagged:
        groups.setdefault(image.series_uid, []).append(image)
    return [(uid, images, sum(1 for i in images if not i.cleared)) for uid, images in groups.items()]


@login_required
@require_GET
def preview(request: HttpRequest, pk: int, image_pk: int) -> HttpResponse:
    """A flagged image as the author checks or masks it: its first frame, at most 1024 pixels."""
    principal, found = _editable_case(request, pk)
    image = found.images.filter(pk=image_pk).first()
    if image is None:
        raise Http404("No such image.")
    try:
        with storage.open_instance(image) as handle:  # type: ignore[arg-type]
            jpeg = rendering.render_frame(handle, size=(1024, 1024), quality=90)
    except (rendering.RenderError, OSError):
        raise Http404("This image cannot be shown.") from None
    if not dicomweb.covered(request, found):
        audit.read(request, found, "teaching.preview", access.LIBRARY_BASIS)
    response = HttpResponse(jpeg, content_type="image/jpeg")
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_POST
def confirm(request: HttpRequest, pk: int) -> HttpResponse:
    """The author checked flagged images (one, or every one of a series) and found no identifying text."""
    principal, found = _editable_case(request, pk)
    images = found.images.exclude(burned_in="").filter(cleared="")
    if request.POST.get("image"):
        images = images.filter(pk=_int(request.POST["image"]) or 0)
    elif request.POST.get("series"):
        images = images.filter(series_uid=request.POST["series"])
    else:
        images = images.none()
    try:
        count = services.images_confirm(case=found, by=principal, images=list(images))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(request, _("%(n)s images confirmed free of identifying text.") % {"n": count})
    return redirect(reverse("teaching:edit", args=[found.pk]) + "#images")


@login_required
@require_POST
def mask(request: HttpRequest, pk: int, image_pk: int) -> HttpResponse:
    principal, found = _editable_case(request, pk)
    image = found.images.filter(pk=image_pk).first()
    if image is None:
        raise Http404("No such image.")
    form = MaskForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError({"mask": _("Give the rectangle's left, top, width and height in pixels.")})
        rect = (form.cleaned_data["x"], form.cleaned_data["y"], form.cleaned_data["width"], form.cleaned_data["height"])
        services.image_mask(case=found, image=image, by=principal, rect=rect)
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(request, _("The rectangle is blanked in a new copy of the image."))
    return redirect(reverse("teaching:edit", args=[found.pk]) + f"#image-{image.pk}")


@login_required
@require_POST
def remove_series(request: HttpRequest, pk: int) -> HttpResponse:
    principal, found = _editable_case(request, pk)
    try:
        count = services.series_remove(case=found, by=principal, series_uid=request.POST.get("series", ""))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
    else:
        messages.success(request, _("%(n)s images left out of the case.") % {"n": count})
    return redirect(reverse("teaching:edit", args=[found.pk]) + "#images")


@login_required
@require_POST
def publish(request: HttpRequest, pk: int) -> HttpResponse:
    principal, found = _editable_case(request, pk)
    if request.POST.get("confirm") != "1":
        messages.error(request, _("Confirm that nothing in the images or the text identifies the patient."))
        return redirect("teaching:edit", pk=found.pk)
    try:
        services.case_publish(case=found, by=principal)
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
        return redirect("teaching:edit", pk=found.pk)
    messages.success(request, _("Published: every doctor of the alliance can read the case now."))
    return redirect("teaching:case", pk=found.pk)


@login_required
@require_POST
def unpublish(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_case_for(principal, pk)
    try:
        services.case_unpublish(case=found, by=principal, reason=request.POST.get("reason", ""))
    except (ValidationError, AccessDenied) as exc:
        messages.error(request, _message(exc))
        return redirect("teaching:case", pk=found.pk)
    messages.success(request, _("Withdrawn from the library."))
    if access.may_edit(principal, found):
        return redirect("teaching:edit", pk=found.pk)
    return redirect("teaching:library")


@login_required
@require_POST
def discard(request: HttpRequest, pk: int) -> HttpResponse:
    principal, found = _editable_case(request, pk)
    if request.POST.get("confirm") != "1":
        messages.error(request, _("Tick the box to confirm that the draft and its images go."))
        return redirect("teaching:edit", pk=found.pk)
    try:
        services.case_discard(case=found, by=principal)
    except AccessDenied as exc:
        messages.error(request, str(exc))
        return redirect("teaching:edit", pk=found.pk)
    messages.success(request, _("The draft and its copies are deleted."))
    return redirect("teaching:mine")


def _label(form: Form, field: str) -> str:
    return str(form.fields[field].label) if field in form.fields else _("Images")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "message_dict"):
            return " ".join(str(m) for messages_ in exc.message_dict.values() for m in messages_)
        return " ".join(str(m) for m in exc.messages)
    return str(exc)
