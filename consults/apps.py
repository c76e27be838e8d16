from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ConsultsConfig(AppConfig):
    name = "consults"
    verbose_name = _("Remote consultation")

    def ready(self) -> None:
        from alliance.modules import register_open_cases
        from consults.access import CONSULTS_MODULE
        from consults.selectors import open_cases_at

        register_open_cases(CONSULTS_MODULE, open_cases_at)
