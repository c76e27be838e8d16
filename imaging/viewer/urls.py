from django.urls import URLPattern, URLResolver

app_name = "viewer"

urlpatterns: list[URLPattern | URLResolver] = []
