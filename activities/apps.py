from django.apps import AppConfig


class ActivitiesConfig(AppConfig):
    """The audit trail (docs/activities.md)."""

    name = "activities"
    verbose_name = "Activities"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth import signals

        from activities import auth_events
        from activities.admin_hooks import install_admin_hooks

        signals.user_logged_in.connect(auth_events.logged_in, dispatch_uid="activities.logged_in")
        signals.user_login_failed.connect(auth_events.login_failed, dispatch_uid="activities.login_failed")
        # Every app's admin module is loaded by now (the admin app's ready() ran first): make each
        # of the console's ModelAdmins record its writes. Idempotent with ActivityLoggingSiteMixin.
        install_admin_hooks(admin.site)
