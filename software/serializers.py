"""REST representations of the software inventory (read-only: agents report software)."""

from __future__ import annotations

from rest_framework import serializers

from software.models import HostSoftware, SoftwareTitle, SoftwareVersion


class SoftwareVersionSerializer(serializers.ModelSerializer):
    host_count = serializers.IntegerField(
        source="hosts_count", read_only=True, help_text="Hosts you may see."
    )

    class Meta:
        model = SoftwareVersion
        fields = ["id", "version", "host_count"]
        read_only_fields = fields


class SoftwareTitleSerializer(serializers.ModelSerializer):
    """A title with its versions; counts cover the hosts the caller may see (and the filters)."""

    host_count = serializers.IntegerField(
        source="hosts_count", read_only=True, help_text="Hosts you may see."
    )
    versions = SoftwareVersionSerializer(source="scoped_versions", many=True, read_only=True)
    source_name = serializers.CharField(source="get_source_display", read_only=True)

    class Meta:
        model = SoftwareTitle
        fields = [
            "id",
            "name",
            "source",
            "source_name",
            "bundle_identifier",
            "extension_for",
            "host_count",
            "versions",
        ]
        read_only_fields = fields


class HostSoftwareSerializer(serializers.ModelSerializer):
    """One item of a host's software: the title (``id`` is the title's), its version, where and when."""

    id = serializers.IntegerField(source="version.title_id", read_only=True)
    name = serializers.CharField(source="version.title.name", read_only=True)
    source = serializers.CharField(source="version.title.source", read_only=True)
    bundle_identifier = serializers.CharField(source="version.title.bundle_identifier", read_only=True)
    extension_for = serializers.CharField(source="version.title.extension_for", read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    version_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = HostSoftware
        fields = [
            "id",
            "name",
            "source",
            "bundle_identifier",
            "extension_for",
            "version",
            "version_id",
            "installed_path",
            "last_opened_at",
        ]
        read_only_fields = fields
