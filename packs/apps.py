from django.apps import AppConfig


class PacksConfig(AppConfig):
    name = "packs"
    verbose_name = "Schedule"  # not "Packs": breadcrumbs would read "Packs › Packs"

    def ready(self) -> None:
        from packs import signals

        signals.connect()  # keep the served osquery configs in step with their inputs
