"""Launch from an EMR (IHE Invoke Image Display style), mounted at the site's root."""

from django.urls import path

from imaging import launch

urlpatterns = [
    path("IHEInvokeImageDisplay", launch.invoke, name="launch"),
    path("launch/", launch.invoke, name="launch_short"),
]
