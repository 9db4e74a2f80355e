from django.apps import AppConfig


class HostScriptsConfig(AppConfig):
    name = "hostscripts"
    verbose_name = "scripts"
