from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Inventory"  # not "Hosts": breadcrumbs would read "Hosts › Hosts"

    def ready(self) -> None:
        # Registers the signal that keeps builtin label membership in step with host platforms;
        # done here so it never depends on the admin (or anything else) importing it first.
        import hosts.labels  # noqa: F401
