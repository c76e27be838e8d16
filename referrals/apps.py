from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = _("Referral")

    def ready(self) -> None:
        from imaging.films import register_case_kind
        from referrals.films import ReferralFilms

        register_case_kind("referral", ReferralFilms())
