from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class FleetConfig(AppConfig):
    """The project package as an app, so its system checks (``fleet.checks``) are registered."""

    name = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        from fleet import checks  # noqa: F401  (registers the checks)


class FleetAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the Fleet site (roles open it; the index is a dashboard)."""

    default = False  # named in INSTALLED_APPS by its path; FleetConfig stays this module's default
    default_site = "fleet.console.FleetAdminSite"
