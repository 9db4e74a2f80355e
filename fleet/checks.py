"""System checks of this project's own settings (``manage.py check``; ``--deploy`` for production).

Ids are in the ``fleet`` namespace:

- ``fleet.W001`` (deploy): production without ``METRICS_TOKEN``: ``/metrics`` refuses every scrape.
- ``fleet.W002`` (deploy): ``METRICS_TOKEN`` is the example's placeholder or too short to be secret.
- ``fleet.E001``: ``API_TOKEN_TTL_HOURS`` is not a positive number of hours.
- ``fleet.E002``: production with a secret still the example's placeholder (``replace-me...``,
  docker/production.env.example, deploy/kubernetes/secret.yaml). An error, so ``migrate`` (and the
  Kubernetes pods, which wait for ``migrate --check``) refuse to run on a template's secrets.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

METRICS_TOKEN_MIN_LENGTH = 24
PLACEHOLDER_PREFIX = "replace-me"  # docker/production.env.example's placeholders start so


@register(Tags.security, deploy=True)
def metrics_token_check(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    token = settings.METRICS_TOKEN
    if settings.EMBEDDED:
        return []
    hint = (
        "Set METRICS_TOKEN_FILE (a mounted secret) or METRICS_TOKEN to a random value, e.g. "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))', and give Prometheus the same "
        "bearer token."
    )
    if not token:
        return [
            Warning(
                "METRICS_TOKEN is not set: /metrics answers 403 to every scrape in production.",
                hint=hint,
                id="fleet.W001",
            )
        ]
    if len(token) < METRICS_TOKEN_MIN_LENGTH or token.lower().startswith(PLACEHOLDER_PREFIX):
        return [
            Warning(
                f"METRICS_TOKEN is a placeholder or shorter than {METRICS_TOKEN_MIN_LENGTH} characters.",
                hint=hint,
                id="fleet.W002",
            )
        ]
    return []


@register(Tags.security)
def api_token_ttl_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.API_TOKEN_TTL.total_seconds() > 0:
        return []
    return [
        Error(
            "API_TOKEN_TTL_HOURS must be a positive number of hours.",
            hint="API tokens must expire; the default is 168 (a week).",
            id="fleet.E001",
        )
    ]


# Settings holding secrets that the templates ship as placeholders, by their environment names.
PLACEHOLDER_SECRETS = {
    "DJANGO_SECRET_KEY": "SECRET_KEY",
    "FLEET_SERVER_PRIVATE_KEY": "SERVER_PRIVATE_KEY",
}


@register(Tags.security)
def placeholder_secrets_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.EMBEDDED:
        return []
    return [
        Error(
            f"{name} is still the example's placeholder.",
            hint=f"Set {name} (or {name}_FILE) to a random value, e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'.",
            id="fleet.E002",
        )
        for name, setting in PLACEHOLDER_SECRETS.items()
        if getattr(settings, setting, "").lower().startswith(PLACEHOLDER_PREFIX)
    ]
