from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = _("Referral")

    def ready(self) -> None:
        from alliance import figures, open_work, unread
        from alliance.modules import register_open_cases
        from imaging.films import register_case_kind
        from imaging.study_cases import register_study_cases
        from referrals import open_work as referral_work
        from referrals import selectors as referrals_selectors
        from referrals.access import REFERRALS_MODULE
        from referrals.figures import compute
        from referrals.films import ReferralFilms
        from referrals.selectors import open_cases_at

        register_study_cases("referral", referrals_selectors.cases_on_studies)
        unread.register("referrals", referrals_selectors.unread_notifications)
        register_case_kind("referral", ReferralFilms())
        register_open_cases(REFERRALS_MODULE, open_cases_at)
        open_work.register("referrals", _("Referrals waiting for you"), referral_work.waiting, order=40)
        figures.register(
            "referrals",
            _("Referrals"),
            compute,
            order=20,
            description=_(
                "Referrals up and down per institution, how many were accepted, and the wait for an appointment."
            ),
        )
        from alliance.fhir import registry
        from referrals import fhir

        for provider in (fhir.ServiceRequestProvider(), fhir.TaskProvider()):
            registry.register(provider)
