from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = _("Referral")

    def ready(self) -> None:
        from alliance import figures
        from imaging.films import register_case_kind
        from referrals.figures import compute
        from referrals.films import ReferralFilms

        register_case_kind("referral", ReferralFilms())
        figures.register(
            "referrals",
            _("Referrals"),
            compute,
            order=20,
            description=_(
                "Referrals up and down per institution, how many were accepted, and the wait for an appointment."
            ),
        )
