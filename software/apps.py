from django.apps import AppConfig


class SoftwareConfig(AppConfig):
    name = "software"

    def ready(self) -> None:
        # The software queries join the detail queries here, so hosts.details stays unaware of
        # this app (the recount's beat entry is in the settings, with the others).
        from hosts import details
        from software.queries import SOFTWARE_QUERIES

        details.register(*SOFTWARE_QUERIES)
