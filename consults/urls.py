from django.urls import URLPattern, URLResolver

app_name = "consults"

urlpatterns: list[URLPattern | URLResolver] = []
