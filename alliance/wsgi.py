import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from alliance.body_timeout import BodyTimeout
from alliance.collector import freeze_what_is_loaded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
application = BodyTimeout(get_wsgi_application(), settings.REQUEST_BODY_TIMEOUT_SECONDS)

get_resolver().url_patterns  # noqa: B018 - built now (not at the first request), to be frozen with the rest
freeze_what_is_loaded()
