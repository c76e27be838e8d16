from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.utils.translation import gettext_lazy as _


class AllianceConfig(AppConfig):
    name = "alliance"
    verbose_name = _("Alliance membership")

    def ready(self) -> None:
        from django.core import checks

        from alliance import ops, signals  # noqa: F401  (task failures recorded; sign-in auditing)
        from alliance.aggregates import register_sqlite_functions
        from alliance.pdf import check_cjk_font

        checks.register(check_cjk_font)
        connection_created.connect(register_sqlite_functions, dispatch_uid="alliance.aggregates")
