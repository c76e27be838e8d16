import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from alliance.body_timeout import BodyTimeout

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
application = BodyTimeout(get_wsgi_application(), settings.REQUEST_BODY_TIMEOUT_SECONDS)
