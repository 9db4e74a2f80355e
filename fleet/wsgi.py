"""WSGI entry point: granian (``fleet.web_server``) serves plain HTTP (agent API, REST, console)
in production. Agent requests pass a gate first: a few at a time per process, the rest shed when
they waited too long (``fleet.agent_admission``)."""

import os

from django.core.wsgi import get_wsgi_application

from fleet.agent_admission import admit_agents
from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)

application = admit_agents(get_wsgi_application())
