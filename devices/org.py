"""The organisation info end users see (name, logo, contact and transparency links).

Read from the single ``FleetSettings`` row without its agent options, which can be large and
are none of the device API's business: one primary-key query per request.
"""

from __future__ import annotations

from hosts.models import FleetSettings

ORG_FIELDS = ("org_name", "org_logo_url", "org_logo_url_light_background", "contact_url", "transparency_url")


def org_settings() -> FleetSettings:
    """The settings row with only the organisation fields loaded (created on first use)."""
    return FleetSettings.objects.only(*ORG_FIELDS).filter(pk=1).first() or FleetSettings.load()
