from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = _("Remote consultation")

    def ready(self) -> None:
        from alliance import figures, open_work, unread
        from alliance.modules import register_open_cases
        from consults import open_work as consult_work
        from consults import selectors as consults_selectors
        from consults.access import CONSULTS_MODULE
        from consults.figures import compute
        from consults.figures_critical import compute as critical_figures
        from consults.films import ConsultFilms
        from consults.selectors import open_cases_at
        from consults.services import consult_exam_arrived
        from imaging.films import register_case_kind
        from imaging.study_cases import register_study_cases
        from imaging.worklist import on_study_arrived

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
        unread.register("consults", consults_selectors.unread_notifications)
        register_case_kind("consult", ConsultFilms())
        register_open_cases(CONSULTS_MODULE, open_cases_at)
        on_study_arrived(consult_exam_arrived)  # the exam a case asked for joins it
        open_work.register("critical", _("Critical results to acknowledge"), consult_work.critical, order=0)
        open_work.register("questions", _("Questions waiting for an answer"), consult_work.questions, order=10)
        open_work.register("signed", _("Reports signed since your last visit"), consult_work.signed_reports, order=20)
        open_work.register("deadlines", _("Cases about to breach their deadline"), consult_work.deadlines, order=30)
        from alliance.fhir import registry
        from consults import fhir

        for provider in (
            fhir.ServiceRequestProvider(),
            fhir.TaskProvider(),
            fhir.DiagnosticReportProvider(),
            fhir.BinaryProvider(),
        ):
            registry.register(provider)
