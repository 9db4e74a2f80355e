from django.apps import AppConfig


class TaskServerConfig(AppConfig):
    """Tasks run by task agents that stay connected (docs/tasks.md)."""

    name = "taskserver"
    verbose_name = "tasks"
