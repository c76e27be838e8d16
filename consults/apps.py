from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = _("Remote consultation")

    def ready(self) -> None:
        from alliance import figures, open_work
        from alliance.modules import register_open_cases
        from consults import open_work as consult_work
        from consults import selectors as consults_selectors
        from consults.access import CONSULTS_MODULE
        from consults.figures import compute
        from consults.figures_critical import compute as critical_figures
        from consults.films import ConsultFilms
        from consults.selectors import open_cases_at
        from imaging.films import register_case_kind
        from imaging.study_cases import register_study_cases

        figures.register(
            "consults",
            _("Consults"),
            compute,
            order=10,
            description=_("Volume, turnaround against the deadlines, breaches, the backlog now and who reads."),
        )
        figures.register(
            "critical",
            _("Critical results"),
            critical_figures,
            order=11,
            description=_("Critical results flagged per month and modality, time to acknowledgement, escalations."),
        )
        register_study_cases("consult", consults_selectors.cases_on_studies)
        register_case_kind("consult", ConsultFilms())
        register_open_cases(CONSULTS_MODULE, open_cases_at)
        open_work.register("questions", _("Questions waiting for an answer"), consult_work.questions, order=10)
        open_work.register("signed", _("Reports signed since your last visit"), consult_work.signed_reports, order=20)
        open_work.register("deadlines", _("Cases about to breach their deadline"), consult_work.deadlines, order=30)
