"""Named values of the audit trail: where an activity came from, and the activity types.

Types use Fleet's names where Fleet records the same thing (``created_team``,
``edited_saved_query``, ``transferred_hosts``, ``live_query``, ``applied_spec_pack``,
``user_logged_in`` ...), so an audit pipeline written for Fleet's ``activity_audit_log`` reads
ours. The ``type`` column has no ``choices``: a new type is a new constant here, not a migration.
"""

from django.db import models


class Surface(models.TextChoices):
    """How the actor reached the server."""

    CONSOLE = "console", "Console"
    REST = "rest", "REST API"
    COMMAND = "command", "manage.py command"
    YAML = "yaml", "YAML specs"
    SYSTEM = "system", "System"


class ActivityType(models.TextChoices):
    """Every type this server records (docs/activities.md lists their details)."""

    # Teams, enroll secrets, agent options, hosts
    CREATED_TEAM = "created_team", "Created a team"
    EDITED_TEAM = "edited_team", "Edited a team"
    DELETED_TEAM = "deleted_team", "Deleted a team"
    EDITED_ENROLL_SECRETS = "edited_enroll_secrets", "Changed enroll secrets"
    EDITED_AGENT_OPTIONS = "edited_agent_options", "Edited agent options"
    TRANSFERRED_HOSTS = "transferred_hosts", "Transferred hosts"
    REFETCHED_HOSTS = "refetched_hosts", "Asked hosts to refetch"
    EDITED_HOST = "edited_host", "Edited a host"
    DELETED_HOST = "deleted_host", "Deleted a host"
    # Labels
    CREATED_LABEL = "created_label", "Created a label"
    EDITED_LABEL = "edited_label", "Edited a label"
    DELETED_LABEL = "deleted_label", "Deleted a label"
    # Queries, packs
    CREATED_SAVED_QUERY = "created_saved_query", "Created a query"
    EDITED_SAVED_QUERY = "edited_saved_query", "Edited a query"
    DELETED_SAVED_QUERY = "deleted_saved_query", "Deleted a query"
    CREATED_PACK = "created_pack", "Created a pack"
    EDITED_PACK = "edited_pack", "Edited a pack"
    DELETED_PACK = "deleted_pack", "Deleted a pack"
    CREATED_SCHEDULED_QUERY = "created_scheduled_query", "Scheduled a query in a pack"
    EDITED_SCHEDULED_QUERY = "edited_scheduled_query", "Edited a pack's scheduled query"
    DELETED_SCHEDULED_QUERY = "deleted_scheduled_query", "Removed a query from a pack"
    # Live queries
    LIVE_QUERY = "live_query", "Ran a live query"
    # Scripts and device actions (hostscripts)
    ADDED_SCRIPT = "added_script", "Added a script"
    EDITED_SCRIPT = "edited_script", "Edited a script"
    DELETED_SCRIPT = "deleted_script", "Deleted a script"
    RAN_SCRIPT = "ran_script", "Ran a script"
    CANCELED_RUN_SCRIPT = "canceled_run_script", "Cancelled a script run"
    LOCKED_HOST = "locked_host", "Locked a host"
    UNLOCKED_HOST = "unlocked_host", "Unlocked a host"
    WIPED_HOST = "wiped_host", "Wiped a host"
    CANCELED_LOCK_HOST = "canceled_lock_host", "Cancelled a lock"
    CANCELED_UNLOCK_HOST = "canceled_unlock_host", "Cancelled an unlock"
    CANCELED_WIPE_HOST = "canceled_wipe_host", "Cancelled a wipe"
    # Apple MDM (mdm)
    MDM_ENROLLED = "mdm_enrolled", "A host enrolled in MDM"
    MDM_UNENROLLED = "mdm_unenrolled", "A host left MDM"
    RAN_MDM_COMMAND = "ran_mdm_command", "Sent an MDM command"
    REVEALED_LOCK_PIN = "revealed_lock_pin", "Revealed a lock PIN"
    CREATED_MACOS_PROFILE = "created_macos_profile", "Added a configuration profile"
    EDITED_MACOS_PROFILE = "edited_macos_profile", "Edited a configuration profile"
    DELETED_MACOS_PROFILE = "deleted_macos_profile", "Deleted a configuration profile"
    RESENT_CONFIGURATION_PROFILE = "resent_configuration_profile", "Resent a configuration profile"
    UPLOADED_APNS_CERTIFICATE = "uploaded_apns_certificate", "Uploaded the APNs certificate"
    # Agent updates (updates)
    INITIALISED_UPDATE_REPOSITORY = "initialised_update_repository", "Initialised the update repository"
    PUBLISHED_AGENT_UPDATE = "published_agent_update", "Published an agent update"
    RESIGNED_UPDATE_TIMESTAMP = "resigned_update_timestamp", "Re-signed the update timestamp"
    # Configuration as code
    APPLIED_SPEC_SAVED_QUERY = "applied_spec_saved_query", "Applied query specs"
    APPLIED_SPEC_PACK = "applied_spec_pack", "Applied pack specs"
    APPLIED_SPEC_TEAM = "applied_spec_team", "Applied team specs"
    APPLIED_SPEC_LABEL = "applied_spec_label", "Applied label specs"
    APPLIED_SPEC_TASK = "applied_spec_task", "Applied task specs"
    APPLIED_SPEC_METRIC_DESTINATION = "applied_spec_metric_destination", "Applied metric destination specs"
    # Users and roles
    USER_LOGGED_IN = "user_logged_in", "Logged in"
    USER_FAILED_LOGIN = "user_failed_login", "Failed to log in"
    CREATED_USER = "created_user", "Created a user"
    EDITED_USER = "edited_user", "Edited a user"
    DELETED_USER = "deleted_user", "Deleted a user"
    CHANGED_USER_GLOBAL_ROLE = "changed_user_global_role", "Changed a user's global role"
    DELETED_USER_GLOBAL_ROLE = "deleted_user_global_role", "Removed a user's global role"
    CHANGED_USER_TEAM_ROLE = "changed_user_team_role", "Changed a user's team role"
    DELETED_USER_TEAM_ROLE = "deleted_user_team_role", "Removed a user's team role"
    # Not in Fleet's list: invitations, deactivation and password resets (users.services).
    INVITED_USER = "invited_user", "Invited a user"
    DELETED_INVITE = "deleted_invite", "Revoked an invitation"
    DEACTIVATED_USER = "deactivated_user", "Deactivated a user"
    ACTIVATED_USER = "activated_user", "Reactivated a user"
    CHANGED_USER_PASSWORD = "changed_user_password", "Reset a user's password"
    # Tasks on task agents (taskserver; docs/tasks.md). Settings and header values never appear.
    CREATED_TASK = "created_task", "Created a task"
    EDITED_TASK = "edited_task", "Edited a task"
    DELETED_TASK = "deleted_task", "Deleted a task"
    EDITED_TASK_AGENT = "edited_task_agent", "Edited a task agent"
    DELETED_TASK_AGENT = "deleted_task_agent", "Deleted a task agent"
    CREATED_AGENT_KEY = "created_agent_key", "Created an agent key"
    DELETED_AGENT_KEY = "deleted_agent_key", "Deleted an agent key"
    CREATED_METRIC_DESTINATION = "created_metric_destination", "Added a metric destination"
    EDITED_METRIC_DESTINATION = "edited_metric_destination", "Edited a metric destination"
    DELETED_METRIC_DESTINATION = "deleted_metric_destination", "Deleted a metric destination"
