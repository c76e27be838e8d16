"""What consults hand to cloud film (imaging.films): the studies and the signed report of
a finished consult, registered in ConsultsConfig.ready() so that imaging never imports us."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from alliance.access import Principal
from consults import access, selectors
from consults.models import Consult, ReportVersion, Status
from imaging.films import FilmCase, FilmReport
from imaging.models import Study


def _report(consult: Consult, version: ReportVersion) -> FilmReport:
    sections = [
        (_("Addendum"), version.addendum),
        (_("Findings"), version.findings),
        (_("Impression"), version.impression),
        (_("Recommendation"), version.recommendation),
    ]
    signer = version.signed_by
    place = consult.pool.institution.name if consult.pool else (signer.institution.name if signer else "")
    return FilmReport(
        title=_("Remote consultation report"),
        sections=sections,
        signed_by=signer.display_name if signer else "",
        signed_by_institution=place,
        signed_at=version.signed_at,
        pdf=partial(_pdf, consult.pk),
    )


def _pdf(consult_pk: int) -> bytes:
    from consults import pdf

    consult = _finished().get(pk=consult_pk)
    return pdf.render_report(consult, selectors.case_detail(consult))


def _finished() -> QuerySet[Consult]:
    return Consult.objects.filter(status=Status.COMPLETED).select_related(
        "pool__institution", "owner__user", "requester__user", "requesting_institution"
    )


def _final(consult: Consult) -> ReportVersion | None:
    """The last signed version: the report as it stands (an addendum repeats the text)."""
    return (
        ReportVersion.objects.filter(report__consult=consult, signed_at__isnull=False)
        .select_related("signed_by__user", "signed_by__institution")
        .order_by("-number")
        .first()
    )


class ConsultFilms:
    def finished_case(self, case_id: int, principal: Principal | None) -> FilmCase | None:
        consults = _finished()
        if principal is not None:
            # The requesting institution gives its patient the film of the answered question.
            consults = access.consults_visible_to(principal).filter(
                status=Status.COMPLETED, requesting_institution_id=principal.institution_id
            )
        consult = consults.filter(pk=case_id).first()
        if consult is None:
            return None
        final = _final(consult)
        studies = list(consult.studies.select_related("patient", "institution"))
        return FilmCase(studies=studies, reports=[_report(consult, final)] if final else [])

    def reports_on(self, studies: Sequence[Study]) -> list[FilmReport]:
        consults = _finished().filter(studies__in=studies).distinct().order_by("-completed_at")
        found = []
        for consult in consults:
            final = _final(consult)
            if final is not None:
                found.append(_report(consult, final))
        return found
