from django.contrib import admin

from consults.teaching.models import Disease


@admin.register(Disease)
class DiseaseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The kept list of diseases: tags of the cases and the choices of their quizzes."""

    list_display = ("code", "name", "name_zh", "icd10", "body_part", "active")
    list_filter = ("body_part", "active")
    search_fields = ("code", "name", "name_zh", "icd10")
