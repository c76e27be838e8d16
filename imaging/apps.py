from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = _("Image store")

    def ready(self) -> None:
        from alliance import audit
        from imaging import selectors

        audit.register_lookup("patient", selectors.patient_audit_keys)
        audit.register_lookup("study", selectors.study_audit_keys)
        audit.register_lookup("patient_labels", selectors.patient_audit_labels)
