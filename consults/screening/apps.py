from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScreeningConfig(AppConfig):
    name = "consults.screening"
    label = "screening"
    verbose_name = _("Screening programmes")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alliance import open_work, unread
        from alliance.modules import register_open_cases
        from consults.screening import selectors
        from consults.screening.access import SCREENING_MODULE
        from imaging.study_cases import register_study_actions, register_study_cases

        register_study_cases("screening", selectors.cases_on_studies)
        register_study_actions("screening", selectors.actions_on_study)
        register_open_cases(SCREENING_MODULE, selectors.open_cases_at)
        unread.register("screening", selectors.unread_notifications)
        open_work.register(
            "screening_reads", _("Screening scans waiting for a reading"), selectors.work_to_read, order=35
        )
        open_work.register("screening_due", _("Screening follow-ups past due"), selectors.work_past_due, order=45)
