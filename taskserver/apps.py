from django.apps import AppConfig


class TaskServerConfig(AppConfig):
    """Tasks run by task agents that stay connected (docs/tasks.md)."""

    name = "taskserver"
    verbose_name = "tasks"

    def ready(self) -> None:
        from taskserver import metric_store

        metric_store.register_collector()  # the agents' metrics on /metrics
