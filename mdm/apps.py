from django.apps import AppConfig


class MdmConfig(AppConfig):
    name = "mdm"
    verbose_name = "Apple MDM"

    def ready(self) -> None:
        from mdm import tasks  # noqa: F401 - registers the beat's MDM tasks in every process
