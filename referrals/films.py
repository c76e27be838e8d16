"""What referrals hand to cloud film (imaging.films): the studies and the returned summary of
a completed referral, registered in ReferralsConfig.ready() so that imaging never imports us."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from alliance.access import Principal
from imaging.films import FilmCase, FilmReport
from imaging.models import Study
from referrals import access
from referrals.models import Referral, Status


def _completed() -> QuerySet[Referral]:
    return Referral.objects.filter(status=Status.COMPLETED).select_related(
        "referrer__user", "from_institution", "to_institution", "patient__issuer", "appointment_doctor__user"
    )


def _report(referral: Referral) -> FilmReport:
    sections = [
        (_("Discharge or feedback summary"), referral.feedback),
        (_("Reason for referral"), referral.reason),
        (_("Clinical summary"), referral.summary),
    ]
    doctor = referral.appointment_doctor
    return FilmReport(
        title=_("Referral"),
        sections=sections,
        signed_by=doctor.display_name if doctor else "",
        signed_by_institution=referral.to_institution.name,
        signed_at=referral.completed_at,
        pdf=partial(_pdf, referral.pk),
    )


def _pdf(referral_pk: int) -> bytes:
    from referrals import pdf

    referral = _completed().get(pk=referral_pk)
    studies = list(referral.studies.select_related("patient", "institution").order_by("-study_date", "-pk"))
    return pdf.render_slip(referral, {"studies": studies})


class ReferralFilms:
    def finished_case(self, case_id: int, principal: Principal | None) -> FilmCase | None:
        referrals = _completed()
        if principal is not None:
            # Either side of a completed referral may give the patient its film.
            referrals = access.referrals_visible_to(principal).filter(status=Status.COMPLETED)
        referral = referrals.filter(pk=case_id).first()
        if referral is None:
            return None
        studies = list(referral.studies.select_related("patient", "institution"))
        return FilmCase(studies=studies, reports=[_report(referral)])

    def reports_on(self, studies: Sequence[Study]) -> list[FilmReport]:
        found = _completed().filter(studies__in=studies).distinct().order_by("-completed_at")
        return [_report(referral) for referral in found]
