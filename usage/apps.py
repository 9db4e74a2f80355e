from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage statistics"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from usage.tasks import on_request_finished

        # The embedded default has no beat: a finished request gives the process its chance to
        # send (at most once per CHECK_INTERVAL, in a thread; usage.tasks explains).
        request_finished.connect(on_request_finished, dispatch_uid="usage-statistics")
