"""Named values of the software inventory: where an item comes from (osquery's table) and so
which platforms report it. No bare source strings elsewhere."""

from __future__ import annotations

from django.db import models


class Source(models.TextChoices):
    """The osquery table a software item was read from (Fleet's ``software.source`` values)."""

    APPS = "apps", "macOS apps"
    SAFARI_EXTENSIONS = "safari_extensions", "Safari extensions"
    CHROME_EXTENSIONS = "chrome_extensions", "Chrome extensions"
    FIREFOX_ADDONS = "firefox_addons", "Firefox add-ons"
    PYTHON_PACKAGES = "python_packages", "Python packages"
    NPM_PACKAGES = "npm_packages", "npm packages"
    PROGRAMS = "programs", "Windows programs"
    CHOCOLATEY_PACKAGES = "chocolatey_packages", "Chocolatey packages"
    IE_EXTENSIONS = "ie_extensions", "Internet Explorer extensions"
    DEB_PACKAGES = "deb_packages", "Debian packages"
    RPM_PACKAGES = "rpm_packages", "RPM packages"


# Sources whose items are browser extensions: their identity is the extension id and the browser.
EXTENSION_SOURCES = frozenset(
    {Source.SAFARI_EXTENSIONS, Source.CHROME_EXTENSIONS, Source.FIREFOX_ADDONS, Source.IE_EXTENSIONS}
)
