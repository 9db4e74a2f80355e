"""WSGI entry point: gunicorn serves plain HTTP (agent API, REST, console) in production."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")

application = get_wsgi_application()
