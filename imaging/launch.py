"""Launch from an EMR (issue 18 item 6), in the style of IHE Invoke Image Display (IID, RAD-106).

    /IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.3[,1.2.4]
    /IHEInvokeImageDisplay?requestType=STUDY&accessionNumber=A123[&issuer=CLINA]
    /IHEInvokeImageDisplay?requestType=PATIENT&patientID=1001^^^CLINA[&modalitiesInStudy=CT]
    (/launch/ is the same page)

A study request that finds one study the user may see opens it in the viewer; several are
listed; a patient request opens the study list of that patient (the issuer, the CX assigning
authority after "^^^" or the `issuer` parameter, is an institution's AE title or name: two
hospitals' "1001" are two people). Someone not signed in is sent to sign in and comes back
to the same launch. The same access rules as everywhere (imaging.access): a study that is
missing and one the user may not see give the same answer; every launch is audited, and the
pages it opens audit what they show. viewerType, diagnosticQuality and keyImagesOnly are
accepted and have no effect (the viewer is the one there is, at full quality).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from alliance import audit
from alliance.access import Principal, institutions_visible_to, principal_of
from alliance.models import Institution
from imaging import access
from imaging.models import Study

MAX_KEYS = 20  # UIDs or accession numbers in one request
_LIST = re.compile(r"[,;\\]")


def _values(request: HttpRequest, name: str) -> list[str]:
    raw = ",".join(request.GET.getlist(name))
    return [v.strip() for v in _LIST.split(raw) if v.strip()][: MAX_KEYS + 1]


def patient_and_issuer(raw: str, issuer: str) -> tuple[str, str]:
    """A CX patient identifier ("1001^^^CLINA", "1001^^^CLINA&1.2.3&ISO") and the issuer the
    request names otherwise: (ID, issuer namespace)."""
    parts = raw.split("^")
    authority = parts[3].split("&")[0].strip() if len(parts) > 3 else ""
    return parts[0].strip(), authority or issuer.strip()


def issuer_of(principal: Principal, name: str) -> Institution | None:
    """The institution of the alliance an issuer names (AE title, else exact name)."""
    candidates = institutions_visible_to(principal)
    return candidates.filter(Q(ae_title__iexact=name) | Q(name=name)).order_by("pk").first()


def _audit(request: HttpRequest, principal: Principal, found: int) -> None:
    keys = ("requestType", "studyUID", "accessionNumber", "patientID", "issuer", "modalitiesInStudy")
    audit.record(
        actor=principal.actor,
        action="launch",
        object_type="launch",
        source=audit.source_of(request),
        detail={"params": {k: request.GET.get(k, "")[:300] for k in keys if k in request.GET}, "found": found},
    )


@login_required
@require_GET
def invoke(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    kind = request.GET.get("requestType", "").strip().upper()
    if not kind:
        kind = "PATIENT" if request.GET.get("patientID") and not request.GET.get("studyUID") else "STUDY"
    if kind == "PATIENT":
        return _patient(request, principal)
    if kind != "STUDY":
        return HttpResponseBadRequest(_("requestType must be STUDY or PATIENT."))
    return _studies(request, principal)


def _patient(request: HttpRequest, principal: Principal) -> HttpResponse:
    patient_id, issuer_name = patient_and_issuer(request.GET.get("patientID", ""), request.GET.get("issuer", ""))
    if not patient_id:
        return HttpResponseBadRequest(_("A PATIENT request needs patientID."))
    params = {"patient_id": patient_id[:64]}
    if issuer_name:
        issuer = issuer_of(principal, issuer_name)
        if issuer is None:
            _audit(request, principal, 0)
            raise Http404(_("No study you may see matches."))
        params["issuer"] = str(issuer.pk)
    modalities = _values(request, "modalitiesInStudy")
    if len(modalities) == 1:
        params["modality"] = modalities[0].upper()
    _audit(request, principal, -1)  # the study list audits what it shows
    return redirect(reverse("imaging:study_list") + "?" + urlencode(params))


def _studies(request: HttpRequest, principal: Principal) -> HttpResponse:
    uids, accessions = _values(request, "studyUID"), _values(request, "accessionNumber")
    if not uids and not accessions:
        return HttpResponseBadRequest(_("A STUDY request needs studyUID or accessionNumber."))
    if len(uids) > MAX_KEYS or len(accessions) > MAX_KEYS:
        return HttpResponseBadRequest(_("At most %(n)d studies in one request.") % {"n": MAX_KEYS})
    wanted = Q(study_uid__in=uids) | Q(accession_number__in=accessions)
    issuer_name = request.GET.get("issuer", "").strip()
    if issuer_name and accessions:
        issuer = issuer_of(principal, issuer_name)
        wanted = Q(study_uid__in=uids) | Q(accession_number__in=accessions, institution=issuer)
    visible = list(
        access.studies_visible_to(principal)
        .filter(wanted)
        .select_related("patient", "institution")
        .order_by("-study_date", "-pk")
    )
    _refuse_hidden(principal, uids, {s.study_uid for s in visible})
    _audit(request, principal, len(visible))
    if not visible:
        raise Http404(_("No study you may see matches."))
    if len(visible) == 1:
        return redirect("viewer:study", study_uid=visible[0].study_uid)
    bases = access.bases_for(principal, visible)
    audit.read_many(request, visible, "study.list", bases)
    return render(request, "imaging/launch.html", {"studies": visible})


def _refuse_hidden(principal: Principal, uids: list[str], shown: set[str]) -> None:
    """A named study that exists but is not the user's to see: a denied read in the audit trail."""
    hidden = Study.objects.filter(study_uid__in=[u for u in uids if u not in shown], deleted_at__isnull=True)
    for uid, patient in hidden.values_list("study_uid", "patient_id"):
        audit.denied(principal.actor, "study", uid, str(patient))
