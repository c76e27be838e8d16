from django.urls import URLPattern, URLResolver, path

from imaging.viewer import views

app_name = "viewer"

urlpatterns: list[URLPattern | URLResolver] = [
    path("study/<str:study_uid>/", views.study, name="study"),
    path("study/<str:study_uid>/prior/<str:prior_uid>/", views.prior, name="prior"),
]
