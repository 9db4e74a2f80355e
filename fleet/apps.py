from django.apps import AppConfig


class FleetConfig(AppConfig):
    """The project package as an app, so its system checks (``fleet.checks``) are registered."""

    name = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from fleet import checks  # noqa: F401  (registers the checks)
