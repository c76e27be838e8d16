"""Teaching pages under /teaching/ (app_name teaching), and each case's DICOMweb for the viewer."""

from django.urls import URLPattern, path

from consults.teaching import dicomweb, views

app_name = "teaching"

STUDY = "<int:pk>/dicomweb/studies/<str:study>"
SERIES = STUDY + "/series/<str:series>"
INSTANCE = SERIES + "/instances/<str:instance>"

urlpatterns: list[URLPattern] = [
    path("", views.library, name="library"),
    path("mine/", views.mine, name="mine"),
    path("quiz/", views.next_quiz, name="next_quiz"),
    path("learning/", views.learning, name="learning"),
    path("new/", views.new, name="new"),
    path("<int:pk>/", views.case, name="case"),
    path("<int:pk>/answer/", views.answer, name="answer"),
    path("<int:pk>/comments/", views.comment, name="comment"),
    path("<int:pk>/thumbnail.jpg", views.thumbnail, name="thumbnail"),
    path("<int:pk>/edit/", views.edit, name="edit"),
    path("<int:pk>/images/<int:image_pk>/preview.jpg", views.preview, name="preview"),
    path("<int:pk>/images/<int:image_pk>/mask/", views.mask, name="mask"),
    path("<int:pk>/confirm/", views.confirm, name="confirm"),
    path("<int:pk>/remove-series/", views.remove_series, name="remove_series"),
    path("<int:pk>/publish/", views.publish, name="publish"),
    path("<int:pk>/unpublish/", views.unpublish, name="unpublish"),
    path("<int:pk>/discard/", views.discard, name="discard"),
    # the viewer's reads (consults.teaching.dicomweb): GET only
    path(STUDY + "/series", dicomweb.for_case(dicomweb.SearchSeries)),
    path(SERIES + "/instances", dicomweb.for_case(dicomweb.SearchInstances)),
    path(SERIES + "/metadata", dicomweb.for_case(dicomweb.RetrieveMetadata)),
    path(SERIES + "/thumbnail", dicomweb.for_case(dicomweb.RetrieveThumbnail)),
    path(INSTANCE + "/metadata", dicomweb.for_case(dicomweb.RetrieveMetadata)),
    path(INSTANCE + "/frames/<str:frames>", dicomweb.for_case(dicomweb.RetrieveFrames)),
    path(INSTANCE + "/rendered", dicomweb.for_case(dicomweb.RetrieveRendered)),
    path(INSTANCE + "/frames/<str:frames>/rendered", dicomweb.for_case(dicomweb.RetrieveRendered)),
    path(INSTANCE + "/thumbnail", dicomweb.for_case(dicomweb.RetrieveThumbnail)),
]
