"""One audit event per opening of a study in the viewer, not one per frame (issue 5).

Opening the viewer writes "study.view" and remembers the study in the browser's session.
The image reads the viewer then makes through DICOMweb with that same session (series
search, metadata, frames, rendered slices, thumbnails) are part of that viewing: they are
still access-checked one by one, but DICOMweb does not write an event for each. Reads
with a token, downloads of whole files (WADO-RS retrieve) and studies the session has
not opened in the viewer are audited as usual.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from rest_framework.authentication import SessionAuthentication

SESSION_KEY = "viewer.opened"
COVERED_ACTIONS = frozenset(
    {
        "dicomweb.search.series",
        "dicomweb.search.image",
        "dicomweb.metadata",
        "dicomweb.frames",
        "dicomweb.rendered",
        "dicomweb.thumbnail",
    }
)


def remember_opening(request: Any, study_uid: str) -> None:
    opened = dict(request.session.get(SESSION_KEY, {}))
    opened[study_uid] = int(time.time())
    request.session[SESSION_KEY] = opened


def covers(request: Any, action: str, studies: Sequence[Any]) -> bool:
    """Whether these reads belong to a viewing that this session already audited."""
    if action not in COVERED_ACTIONS or not studies:
        return False
    if getattr(request, "film_viewing", False):
        return True  # a film link's holder: its page audited the viewing (imaging.film_session)
    if not isinstance(getattr(request, "successful_authenticator", None), SessionAuthentication):
        return False
    opened = request.session.get(SESSION_KEY, {})
    oldest = time.time() - settings.SESSION_COOKIE_AGE
    return all(opened.get(study.study_uid, 0) >= oldest for study in studies)
