"""WSGI entry point: granian (``fleet.web_server``) serves plain HTTP (agent API, REST, console)
in production."""

import os

from django.core.wsgi import get_wsgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)

application = get_wsgi_application()
