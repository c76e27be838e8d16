import gc
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from alliance.body_timeout import BodyTimeout

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
application = BodyTimeout(get_wsgi_application(), settings.REQUEST_BODY_TIMEOUT_SECONDS)

# What a web process loads once and keeps for its life (Django, the apps, the URL patterns) is
# moved out of the cyclic collector's generations, as dicom_server does: the first full
# collection otherwise walks all of it in the middle of some request, a pause of about 70 ms
# (QIDO-RS, bench/RESULTS.md, DICOMweb). Reference counting still frees what is dropped.
get_resolver().url_patterns  # noqa: B018 - loaded now, to be frozen with the rest
gc.freeze()
