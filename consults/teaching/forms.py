"""The forms of the teaching pages. Writes go through consults.teaching.services."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.utils.translation import gettext_lazy as _

from consults.teaching.models import BodyPart, Difficulty, Disease, Modality, TeachingCase
from consults.teaching.selectors import Search


def disease_label(disease: Disease) -> str:
    """ "Chest · Pneumonia": the list is ordered by body part, which the label shows."""
    part = disease.get_body_part_display()
    return f"{part} · {disease.label}" if part else disease.label


class DiseaseChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Disease) -> str:
        return disease_label(obj)


class DiseaseChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Disease) -> str:
        return disease_label(obj)


def _blank(choices: Any, label: Any) -> list[tuple[str, Any]]:
    return [("", label), *choices]


def _choose(form: forms.Form, name: str, choices: Any) -> None:
    cast(forms.ChoiceField, form.fields[name]).choices = choices


class NewCaseForm(forms.Form):
    """Which images of the study the case copies."""

    title = forms.CharField(
        label=_("Title"),
        max_length=200,
        help_text=_("Do not give the diagnosis away in the title if the case will have a quiz."),
    )
    series = forms.MultipleChoiceField(label=_("Whole series"), required=False, widget=forms.CheckboxSelectMultiple)
    keys = forms.MultipleChoiceField(label=_("Key images"), required=False, widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args: Any, series: list[tuple[str, str]], keys: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choose(self, "series", series)
        _choose(self, "keys", keys)


class CaseForm(forms.Form):
    """The author's text, tags and quiz."""

    title = forms.CharField(label=_("Title"), max_length=200)
    question = forms.CharField(
        label=_("Teaching question"),
        max_length=4000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("What the reader is asked, shown with the images before the answer."),
    )
    findings = forms.CharField(label=_("Findings"), max_length=8000, required=False, widget=forms.Textarea)
    diagnosis = forms.CharField(
        label=_("Diagnosis"), max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    discussion = forms.CharField(label=_("Discussion"), max_length=12000, required=False, widget=forms.Textarea)
    modality = forms.ChoiceField(label=_("Modality"), required=False)
    body_part = forms.ChoiceField(label=_("Body part"), required=False)
    difficulty = forms.ChoiceField(label=_("Difficulty"), choices=Difficulty.choices)
    diseases = DiseaseChoices(
        label=_("Diseases"),
        queryset=Disease.objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text=_("From the alliance's list; hold Ctrl (or ⌘) to choose several."),
    )
    answer = DiseaseChoice(
        label=_("Quiz answer"),
        queryset=Disease.objects.none(),
        required=False,
        help_text=_("Leave empty for a case without a quiz."),
    )
    distractors = DiseaseChoices(
        label=_("Wrong choices offered beside it"),
        queryset=Disease.objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text=_("2 to 5."),
    )

    def __init__(self, *args: Any, diseases: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choose(self, "modality", _blank(Modality.choices, _("Choose…")))
        _choose(self, "body_part", _blank(BodyPart.choices, _("Choose…")))
        for name in ("diseases", "answer", "distractors"):
            self.fields[name].queryset = diseases  # type: ignore[attr-defined]

    @classmethod
    def initial_of(cls, case: TeachingCase) -> dict[str, Any]:
        fields = ("title", "question", "findings", "diagnosis", "discussion", "modality", "body_part", "difficulty")
        initial: dict[str, Any] = {name: getattr(case, name) for name in fields}
        initial["diseases"] = list(case.diseases.all())
        initial["answer"] = case.answer
        initial["distractors"] = list(case.distractors.all())
        return initial


class MaskForm(forms.Form):
    """A rectangle in pixels of the image (the page's script fills it from a drawn box)."""

    x = forms.IntegerField(label=_("Left"), min_value=0)
    y = forms.IntegerField(label=_("Top"), min_value=0)
    width = forms.IntegerField(label=_("Width"), min_value=1)
    height = forms.IntegerField(label=_("Height"), min_value=1)


class SearchForm(forms.Form):
    q = forms.CharField(label=_("Words"), required=False, max_length=200)
    modality = forms.ChoiceField(label=_("Modality"), required=False)
    body_part = forms.ChoiceField(label=_("Body part"), required=False)
    disease = DiseaseChoice(label=_("Disease"), queryset=Disease.objects.none(), required=False)
    difficulty = forms.ChoiceField(label=_("Difficulty"), required=False)
    quiz = forms.BooleanField(label=_("Quizzes only"), required=False)

    def __init__(self, *args: Any, diseases: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choose(self, "modality", _blank(Modality.choices, _("Any")))
        _choose(self, "body_part", _blank(BodyPart.choices, _("Any")))
        _choose(self, "difficulty", _blank(Difficulty.choices, _("Any")))
        self.fields["disease"].queryset = diseases  # type: ignore[attr-defined]
        self.fields["disease"].empty_label = _("Any")  # type: ignore[attr-defined]

    def to_search(self) -> Search:
        if not self.is_valid():
            return Search()
        data = self.cleaned_data
        disease = data.get("disease")
        return Search(
            text=data.get("q", ""),
            modality=data.get("modality", ""),
            body_part=data.get("body_part", ""),
            disease=disease.pk if disease is not None else None,
            difficulty=data.get("difficulty", ""),
            quiz_only=bool(data.get("quiz")),
        )


class CommentForm(forms.Form):
    body = forms.CharField(label=_("Your comment"), max_length=4000, widget=forms.Textarea(attrs={"rows": 3}))


class UnpublishForm(forms.Form):
    reason = forms.CharField(label=_("Why is the case withdrawn?"), max_length=1000)
