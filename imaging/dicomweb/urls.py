"""DICOMweb (PS3.18) under /dicomweb/: QIDO-RS, WADO-RS and STOW-RS.

The base URL a client is given is <site>/dicomweb (for example
DICOMwebClient("https://pacs.example.org/dicomweb", headers={"Authorization": "Token ..."})).
"""

from django.urls import URLPattern, path

from imaging.dicomweb import qido, stow, wado

STUDY = "studies/<str:study>"
SERIES = STUDY + "/series/<str:series>"
INSTANCE = SERIES + "/instances/<str:instance>"


class StudiesResource(qido.SearchStudies, stow.StoreInstances):
    """/studies: GET searches (QIDO-RS), POST stores (STOW-RS)."""


class StudyResource(wado.RetrieveInstances, stow.StoreInstances):
    """/studies/{study}: GET retrieves (WADO-RS), POST stores into that study (STOW-RS)."""


urlpatterns: list[URLPattern] = [
    path("studies", StudiesResource.as_view(), name="dicomweb-studies"),
    path(STUDY, StudyResource.as_view(), name="dicomweb-study"),
    path(STUDY + "/metadata", wado.RetrieveMetadata.as_view()),
    path(STUDY + "/thumbnail", wado.RetrieveThumbnail.as_view()),
    path(STUDY + "/series", qido.SearchSeries.as_view()),
    path(STUDY + "/instances", qido.SearchInstances.as_view()),
    path(SERIES, wado.RetrieveInstances.as_view()),
    path(SERIES + "/metadata", wado.RetrieveMetadata.as_view()),
    path(SERIES + "/thumbnail", wado.RetrieveThumbnail.as_view()),
    path(SERIES + "/instances", qido.SearchInstances.as_view()),
    path(INSTANCE, wado.RetrieveInstances.as_view()),
    path(INSTANCE + "/metadata", wado.RetrieveMetadata.as_view()),
    path(INSTANCE + "/rendered", wado.RetrieveRendered.as_view()),
    path(INSTANCE + "/thumbnail", wado.RetrieveThumbnail.as_view()),
    path(INSTANCE + "/bulk/<str:tag>", wado.RetrieveBulkData.as_view()),
    path(INSTANCE + "/frames/<str:frames>", wado.RetrieveFrames.as_view()),
    path(INSTANCE + "/frames/<str:frames>/rendered", wado.RetrieveRendered.as_view()),
    path("series", qido.SearchSeries.as_view()),
    path("instances", qido.SearchInstances.as_view()),
]
