"""WSGI entry point: granian (``fleet.web_server``) serves plain HTTP (agent API, REST, console)
in production. osquery's requests go straight to their views (``agentapi.direct``). A worker with
more threads than ``FLEET_AGENT_CONCURRENCY`` runs agent requests behind a gate: a few at a time,
the rest shed when they waited too long (``fleet.agent_admission``). REST calls that wait for
agents may hold one thread less than the worker has (``fleet.held_requests``)."""

import os

from django.core.wsgi import get_wsgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)
django_application = get_wsgi_application()  # sets Django up before the imports below

from django.conf import settings  # noqa: E402

from agentapi.direct import direct_agent_routes  # noqa: E402
from fleet import held_requests  # noqa: E402
from fleet.agent_admission import admit_agents  # noqa: E402

if settings.WEB_THREADS:
    held_requests.cap(settings.WEB_THREADS - 1)
application = admit_agents(direct_agent_routes(django_application), settings.WEB_THREADS)
