"""The study viewer page. The page carries the study's identity, the translated strings and
the metadata of the slice shown first; the pixels come through DICOMweb, which checks
access per request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import get_script_prefix, reverse
from django.utils import formats
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from alliance import audit
from alliance.access import principal_of
from imaging import access, key_objects, selectors
from imaging.dicomweb.wado import instance_metadata
from imaging.models import Study
from imaging.viewer import session

# Series without pixels to show first: structured reports, presentation states, key objects.
NON_IMAGE_MODALITIES = ("SR", "PR", "KO")


@require_GET
@login_required
@xframe_options_sameorigin  # the one page this site frames (a consult's report); all others DENY
def study(request: HttpRequest, study_uid: str) -> HttpResponse:
    principal = principal_of(request)
    found = access.get_study_for(principal, study_uid)
    audit.read(request, found, "study.view", access.basis_for(principal, found), via="viewer")
    session.remember_opening(request, found.study_uid)
    # The patient's other studies this user may see, listed beside the series (their
    # dates and descriptions are patient data too: a list read, as on the study list).
    priors = selectors.prior_studies(principal, found)
    audit.read_many(request, priors, "study.list", access.bases_for(principal, priors), via="viewer-priors")
    # ?embed=1: no site header, for a page that shows the viewer in a frame beside
    # something else (a consult's report); the policy allows framing by this site only.
    config = viewer_config(found, layout="touch" if request.GET.get("layout") == "touch" else "auto", priors=priors)
    config["key_objects"] = key_objects_config(request, found)
    # The viewer opens on the first key image when it lies in the series shown first.
    key = config["key_objects"]["first"]
    if key and config["first"] and key["series_uid"] == config["first"]["uid"]:
        config["start_sop_uid"] = key["sop_uid"]
    context = {
        "study": found,
        # ?layout=touch: the touch layout on any screen (a tablet with a keyboard).
        "viewer_config": config,
        "embed": request.GET.get("embed") == "1",
        # ?mode=rendered forces the server-rendered fallback, which needs none of Cornerstone.
        "preload": None if request.GET.get("mode") == "rendered" else bundle_preload(),
        "emergency": access.active_break_glass(principal, found),
    }
    return render(request, "viewer/study.html", context)


@require_GET
@login_required
def prior(request: HttpRequest, study_uid: str, prior_uid: str) -> JsonResponse:
    """What the viewer needs to open a prior beside the study: the prior's own config (its
    first series and slice, its labels). Opening it is a read of that study, audited as
    any opening of the viewer is; a study that is not one of the study's priors for this
    user is the same 404 as a missing one."""
    principal = principal_of(request)
    current = access.get_study_for(principal, study_uid)
    found = selectors.get_prior_for(principal, current, prior_uid)
    audit.read(request, found, "study.view", access.basis_for(principal, found), via="viewer-prior")
    config = viewer_config(found)
    return JsonResponse({key: config[key] for key in ("study_uid", "dicomweb", "patient", "study", "first")})


@cache
def bundle_preload() -> dict[str, Any]:
    """The Cornerstone chunks and decode worker the page asks for beside viewer.js, listed
    by the build (vite.config.js writes viewer/preload.json with the hashed names)."""
    path = finders.find("viewer/preload.json")
    if not isinstance(path, str):
        raise FileNotFoundError("viewer/preload.json is missing: rebuild the viewer (imaging/viewer/frontend).")
    with open(path, encoding="utf-8") as handle:
        listed = json.load(handle)
    return {"modules": [f"viewer/{name}" for name in listed["modules"]], "worker": f"viewer/{listed['worker']}"}


LAYOUTS = ("auto", "touch")


def viewer_config(
    study: Study,
    *,
    dicomweb_base: str | None = None,
    layout: str = "auto",
    priors: Sequence[Study] = (),
) -> dict[str, Any]:
    """What the script needs, as data (json_script): no inline JavaScript under the CSP.

    dicomweb_base: the DICOMweb root the script reads the study from (a path on this site,
    e.g. a film link's own scoped DICOMweb); by default the site's /dicomweb. The script
    fetches from nowhere else, with same-origin credentials only.
    layout: "auto" picks the touch layout on a narrow touch-first screen, "touch" always.
    priors: the patient's other studies the user may see (selectors.prior_studies), which
    the viewer lists and opens beside this one."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    dicomweb = f"{get_script_prefix()}dicomweb" if dicomweb_base is None else dicomweb_base.rstrip("/")
    if not dicomweb.startswith("/") or dicomweb.startswith("//") or "\\" in dicomweb:
        # A path on this site only: the patient data must never go to another host.
        raise ValueError(f"dicomweb_base must be a path on this site, not {dicomweb_base!r}")
    patient = study.patient
    birth = formats.date_format(patient.birth_date) if patient.birth_date else ""
    return {
        "study_uid": study.study_uid,
        "dicomweb": dicomweb,
        "layout": layout,
        "patient": {
            "name": patient.display_name,  # "杨志强 (Yang Zhiqiang)", as on the pages
            "id": patient.patient_id,
            "sex_birth": " · ".join(v for v in (capfirst(patient.sex_display), birth) if v),
        },
        "study": {
            "institution": study.institution.name,
            "description": study.description,
            "date": formats.date_format(study.study_date) if study.study_date else "",
        },
        "strings": viewer_strings(),
        "first": first_image(study),
        "priors": [prior_entry(study, p) for p in priors],
    }


def prior_entry(study: Study, prior_study: Study) -> dict[str, Any]:
    return {
        "study_uid": prior_study.study_uid,
        "date": formats.date_format(prior_study.study_date) if prior_study.study_date else "",
        "description": prior_study.description,
        "modalities": prior_study.modalities,
        "institution": prior_study.institution.name,
        "url": reverse("viewer:prior", args=[study.study_uid, prior_study.study_uid]),
    }


def first_image(study: Study) -> dict[str, Any] | None:
    """The series the viewer opens first and its first instance (Instance Number order: the
    index knows no positions; the script sorts by position and corrects it when they
    differ), known here from the index, so the first image is fetched at once instead of
    after DICOMweb searches."""
    series = study.series.exclude(modality__in=NON_IMAGE_MODALITIES).order_by("series_number", "id").first()
    if series is None:
        return None
    instances = series.instances.order_by("instance_number", "id")
    count = instances.count()
    if not count:
        return None
    shown = instances.select_related("series__study")[0]
    return {
        "uid": series.series_uid,
        "number": series.series_number,
        "modality": series.modality,
        "description": series.description,
        "count": count,
        "first_sop_uid": shown.sop_uid,
        # Its metadata too: the script then asks for the slice's pixels at once, while
        # the viewer's code is still loading, and the series' metadata after it is drawn.
        "first_metadata": instance_metadata(shown),
    }


def key_objects_config(request: HttpRequest, study: Study) -> dict[str, Any]:
    """For keyimages.js: where the user's key images and measurements are read and saved
    (the API says whether they may save), and the first key image, where the viewer opens."""
    return {
        "url": reverse("api-study-key-objects", args=[study.study_uid]),
        "csrf": get_token(request),
        "first": key_objects.first_key_image(study, request.user.pk),
        "strings": {
            "key_image": _("Key image"),
            "key_image_title": _("Mark or unmark the image on screen as a key image"),
            "key_image_prior": _("A prior study's images are marked in that study's own viewer"),
            "save": _("Save marks"),
            "save_title": _("Save the key images and measurements into the study"),
            "saving": _("Saving…"),
            "saved": _("Saved into the study: %(keys)s key images, %(measurements)s measurements."),
            "save_failed": _("Not saved:"),
            "load_failed": _("Your saved key images and measurements could not be loaded."),
        },
    }


def viewer_strings() -> dict[str, str]:
    """The strings the script shows; %(name)s placeholders are filled in by the script."""
    return {
        "loading": _("Loading images…"),
        "load_failed": _("The images could not be loaded. Check the connection and reload the page."),
        "no_images": _("This study has no images to show."),
        "patient_id": _("ID"),
        "series_line": _("Series %(number)s: %(description)s"),
        "image_line": _("Image %(index)s / %(count)s"),
        "position_line": _("Position %(position)s mm"),
        "window_line": _("W %(width)s  L %(center)s"),
        "zoom_line": _("Zoom %(zoom)s×"),
        "images": _("%(count)s images"),
        "play": _("Play"),
        "stop": _("Stop"),
        "full_screen": _("Full screen"),
        "exit_full_screen": _("Exit full screen"),
        # The value under the cursor with the Probe tool: pixel column and row, value, unit (HU on a CT).
        "probe_line": _("(%(x)s, %(y)s) %(value)s %(unit)s"),
        "probe_pin": _("%(value)s %(unit)s"),
        "roi_area": _("Area %(value)s %(unit)s"),
        "roi_mean": _("Mean %(value)s %(unit)s"),
        "roi_sd": _("SD %(value)s %(unit)s"),
        "priors": _("Prior studies"),
        "no_priors": _("No other studies of this patient"),
        "open_prior": _("Open beside"),
        "close_prior": _("Close prior"),
        "sync_scroll": _("Scroll together"),
        "mpr": _("MPR"),
        "mpr_title": _("Axial, sagittal and coronal views with crosshairs, and a MIP slab"),
        "mpr_unavailable": _("MPR needs a CT or MR series of at least 20 parallel, evenly spaced slices."),
        "mpr_loading": _("Loading the volume…"),
        # MPR shows a preview (every few slices, fewer pixels) until the whole series has arrived.
        "mpr_reduced": _("Reduced detail until the whole volume has loaded: %(loaded)s of %(total)s slices"),
        "mpr_close": _("Close MPR"),
        "mpr_axial": _("Axial"),
        "mpr_sagittal": _("Sagittal"),
        "mpr_coronal": _("Coronal"),
        "mpr_mip": _("MIP"),
        "mpr_slab": _("MIP slab %(mm)s mm"),
    }
