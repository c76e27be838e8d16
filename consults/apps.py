from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = _("Remote consultation")

    def ready(self) -> None:
        from consults.films import ConsultFilms
        from imaging.films import register_case_kind

        register_case_kind("consult", ConsultFilms())
