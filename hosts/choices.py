"""Named values used by hosts, so that no bare strings float around the code."""

from django.db import models


class HostStatus(models.TextChoices):
    """Fleet's host statuses. ``new`` is orthogonal (enrolled within 24 h): a filter, not a state."""

    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    MISSING = "missing", "Missing"
    NEW = "new", "New"


class Role(models.TextChoices):
    """Fleet's roles; a user holds one global role or one role per team."""

    ADMIN = "admin", "Admin"
    MAINTAINER = "maintainer", "Maintainer"
    OBSERVER = "observer", "Observer"
    OBSERVER_PLUS = "observer_plus", "Observer+"
    GITOPS = "gitops", "GitOps"


# Fleet's platform families, as osquery's os_version.platform reports them.
LINUX_PLATFORMS = frozenset(
    {
        "linux",
        "ubuntu",
        "debian",
        "centos",
        "rhel",
        "fedora",
        "amzn",
        "arch",
        "manjaro",
        "gentoo",
        "opensuse",
        "suse",
        "sles",
        "pop",
        "linuxmint",
        "kali",
        "rocky",
        "almalinux",
        "ol",
        "nixos",
    }
)
