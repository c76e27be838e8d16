from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ImagingConfig(AppConfig):
    name = "imaging"
    verbose_name = _("Image store")

    def ready(self) -> None:
        from alliance import audit, figures
        from imaging import break_glass_figures, film_figures, patients, selectors
        from imaging.figures import compute

        figures.register(
            "imaging",
            _("Image store"),
            compute,
            order=50,
            description=_("Studies received and the space they take, per institution and month."),
        )
        figures.register(
            "cloud_film",
            _("Cloud film"),
            film_figures.compute,
            order=60,
            description=_("Printed film the patients did not need, and what it would have cost."),
        )
        figures.register(
            "break_glass",
            _("Emergency access"),
            break_glass_figures.compute,
            order=70,
            description=_("Studies opened outside the grants in an emergency, and their review."),
        )
        audit.register_lookup("patient", selectors.patient_audit_keys)
        audit.register_patient_owner(patients.issuer_of_audit_key)
        audit.register_lookup("study", selectors.study_audit_keys)
        audit.register_lookup("patient_labels", selectors.patient_audit_labels)
        from alliance.fhir import registry
        from imaging.fhir.audit_events import AuditEventProvider
        from imaging.fhir.orders import WorklistOrderProvider
        from imaging.fhir.resources import ImagingStudyProvider, PatientProvider

        for provider in (PatientProvider(), ImagingStudyProvider(), AuditEventProvider(), WorklistOrderProvider()):
            registry.register(provider)
