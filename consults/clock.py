"""The consults' one source of "now", so that tests (and the deadline job) can set the time."""

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    return timezone.now()
