from django.apps import AppConfig


class UsersConfig(AppConfig):
    """Console user management, invitations, password rules and ``manage.py user``."""

    name = "users"
    verbose_name = "Users"
