"""Reads of teaching cases that pages share: the library's search, a doctor's quiz record, the
continuing-education counts. Whose rows they may be is decided by consults.teaching.access."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from alliance.access import Principal
from alliance.models import Doctor
from consults.teaching import access
from consults.teaching.models import Disease, QuizAttempt, TeachingCase


@dataclass(frozen=True)
class Search:
    """What the library was asked: words, and tags (empty: any)."""

    text: str = ""
    modality: str = ""
    body_part: str = ""
    disease: int | None = None
    difficulty: str = ""
    quiz_only: bool = False


def library(principal: Principal, search: Search) -> QuerySet[TeachingCase]:
    """The published cases that match, newest first."""
    found = access.library_for(principal)
    for word in search.text.split()[:8]:
        found = found.filter(
            Q(title__icontains=word)
            | Q(question__icontains=word)
            | Q(findings__icontains=word)
            | Q(diagnosis__icontains=word)
            | Q(discussion__icontains=word)
            | Q(diseases__name__icontains=word)
            | Q(diseases__name_zh__icontains=word)
        )
    for field in ("modality", "body_part", "difficulty"):
        if getattr(search, field):
            found = found.filter(**{field: getattr(search, field)})
    if search.disease is not None:
        found = found.filter(Q(diseases=search.disease) | Q(answer=search.disease))
    if search.quiz_only:
        found = found.filter(answer__isnull=False)
    return (
        found.distinct()
        .select_related("author__user", "author_institution")
        .annotate(image_count=Count("images", distinct=True))
        .order_by("-published_at", "-pk")
    )


def attempts_of(principal: Principal, cases: list[TeachingCase]) -> dict[int, QuizAttempt]:
    """The principal's answers to these cases' quizzes, by case pk (one query)."""
    if principal.doctor is None or not cases:
        return {}
    rows = QuizAttempt.objects.filter(doctor=principal.doctor, case__in=cases)
    return {a.case_id: a for a in rows}


def attempt_of(principal: Principal, case: TeachingCase) -> QuizAttempt | None:
    if principal.doctor is None:
        return None
    return QuizAttempt.objects.filter(doctor=principal.doctor, case=case).select_related("choice").first()


@dataclass(frozen=True)
class Score:
    answered: int
    correct: int

    @property
    def percent(self) -> int | None:
        return round(100 * self.correct / self.answered) if self.answered else None


def score_of(principal: Principal) -> Score:
    """The principal's quiz record: quizzes answered (not merely revealed), and how many rightly."""
    if principal.doctor is None:
        return Score(0, 0)
    rows = QuizAttempt.objects.filter(doctor=principal.doctor, choice__isnull=False)
    counts = rows.aggregate(answered=Count("pk"), correct=Count("pk", filter=Q(correct=True)))
    return Score(counts["answered"], counts["correct"])


def next_quiz(principal: Principal) -> TeachingCase | None:
    """The oldest published quiz the principal has not answered and did not write."""
    if principal.doctor is None:
        return None
    done = QuizAttempt.objects.filter(doctor=principal.doctor).values("case_id")
    waiting = access.library_for(principal).filter(answer__isnull=False).exclude(pk__in=done)
    return waiting.exclude(author=principal.doctor).order_by("published_at", "pk").first()


def quiz_choices(case: TeachingCase) -> list[Disease]:
    """The answer and the wrong choices, in an order that does not give the answer away (by name)."""
    choices = [*case.distractors.all(), *([case.answer] if case.answer is not None else [])]
    return sorted(choices, key=lambda d: (d.label, d.pk))


def active_diseases() -> QuerySet[Disease]:
    return Disease.objects.filter(active=True)


@dataclass(frozen=True)
class Learning:
    doctor: Doctor
    viewed: int
    answered: int
    correct: int

    @property
    def percent(self) -> int | None:
        return round(100 * self.correct / self.answered) if self.answered else None


def learning_of(principal: Principal) -> list[Learning]:
    """Per doctor of the admin's institution: cases opened, quizzes answered, answered rightly
    (cases of any state count: a withdrawn case was still read). One query."""
    doctors = (
        access.learners_for(principal)
        .select_related("user")
        .annotate(
            viewed=Count("teaching_views", distinct=True),
            answered=Count("quiz_attempts", filter=Q(quiz_attempts__choice__isnull=False), distinct=True),
            correct=Count("quiz_attempts", filter=Q(quiz_attempts__correct=True), distinct=True),
        )
        .order_by("user__last_name", "user__first_name", "user__username")
    )
    return [Learning(d, d.viewed, d.answered, d.correct) for d in doctors]


def thread_of(case: TeachingCase) -> QuerySet[Any]:
    return case.comments.select_related("author__user", "author__institution")


def series_of(case: TeachingCase) -> list[dict[str, Any]]:
    """The case's series as the author's page lists them: number, description, images, key images."""
    rows = (
        case.images.values("series_uid", "series_number", "series_description", "modality")
        .annotate(images=Count("pk"), keys=Count("pk", filter=Q(is_key=True)))
        .order_by("series_number", "series_uid")
    )
    return list(rows)
