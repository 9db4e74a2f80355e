"""WSGI entry point: granian (``fleet.web_server``) serves plain HTTP (agent API, REST, console)
in production. Agent requests pass a gate first: a few at a time per process, the rest shed when
they waited too long (``fleet.agent_admission``); osquery's then go straight to their views
(``agentapi.direct``)."""

import os

from django.core.wsgi import get_wsgi_application

from fleet.malloc import tune_malloc

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
tune_malloc()  # large agent bodies must not leave the process's memory high (fleet/malloc.py)
django_application = get_wsgi_application()  # sets Django up before the imports below

from agentapi.direct import direct_agent_routes  # noqa: E402
from fleet.agent_admission import admit_agents  # noqa: E402

application = admit_agents(direct_agent_routes(django_application))
