"""REST shapes of scripts, run requests and results, with Fleet's field names.

The library's writes are checked by ``hostscripts.services.save_script`` (the console and the
command use it too), not here: these serializers only check the shape of the input (types,
which fields go together), so that every surface gives the same message for the same script.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from hostscripts import messages
from hostscripts.device_status import DEVICE_ACTION_KINDS
from hostscripts.models import Script, ScriptKind, ScriptRun

MAX_ID = 2**63 - 1  # what every database here stores in an id column; larger is no id at all


def id_field(**kwargs: Any) -> serializers.IntegerField:
    """An object id from a client: a positive integer that fits an id column (400 otherwise)."""
    return serializers.IntegerField(min_value=kwargs.pop("min_value", 1), max_value=MAX_ID, **kwargs)


class ScriptTextField(serializers.CharField):
    """Script contents as sent: NUL characters are left to ``validate_contents`` (Fleet's message,
    the same on every surface) instead of DRF's generic refusal."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=True, trim_whitespace=False, **kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]


class ScriptSerializer(serializers.ModelSerializer):
    """A saved script as listed (without its contents, which may be 500,000 characters)."""

    team_id = serializers.IntegerField(read_only=True, allow_null=True)
    team_name = serializers.SerializerMethodField()
    author = serializers.SerializerMethodField()

    class Meta:
        model = Script
        fields = ["id", "team_id", "team_name", "name", "platforms", "author", "created_at", "updated_at"]
        read_only_fields = fields

    def get_team_name(self, script: Script) -> str | None:
        return script.team.name if script.team_id else None

    def get_author(self, script: Script) -> str | None:
        return script.author.get_username() if script.author_id and script.author else None


class ScriptDetailSerializer(ScriptSerializer):
    """One saved script, with its contents."""

    class Meta(ScriptSerializer.Meta):
        fields = [*ScriptSerializer.Meta.fields, "contents"]
        read_only_fields = fields


class ScriptWriteSerializer(serializers.Serializer):
    """A new script or a change: JSON ``{name, contents, team_id}``, or a multipart ``script`` file
    (Fleet's ``POST /scripts``), whose file name is the script's name unless ``name`` is given."""

    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    contents = ScriptTextField()
    script = serializers.FileField(required=False, help_text="The script file (multipart form).")
    team_id = id_field(
        required=False, allow_null=True, min_value=0, help_text="The team's library; null or 0: global."
    )


class ScriptRunRequestSerializer(serializers.Serializer):
    """``POST /scripts/run/`` (and ``run/sync/``): one host and one script, saved or not."""

    host_id = id_field()
    script_id = id_field(required=False, allow_null=True)
    script_contents = ScriptTextField()
    script_name = serializers.CharField(required=False, allow_blank=True)
    team_id = id_field(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="With script_name: its team (0 or null: global).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return check_script_choice(attrs, allow_name=True)


class BatchScriptRunRequestSerializer(serializers.Serializer):
    """``POST /scripts/run/batch/``: one script on the union of hosts, labels' members and a team."""

    script_id = id_field(required=False, allow_null=True)
    script_contents = ScriptTextField()
    host_ids = serializers.ListField(child=id_field(), required=False, max_length=100_000)
    label_ids = serializers.ListField(child=id_field(), required=False, max_length=1_000)
    team_id = id_field(
        required=False, allow_null=True, min_value=0, help_text="The team's hosts; 0: hosts without a team."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = check_script_choice(attrs, allow_name=False)
        if not attrs.get("host_ids") and not attrs.get("label_ids") and attrs.get("team_id") is None:
            raise serializers.ValidationError("Give the targets: host_ids, label_ids or team_id.")
        return attrs


def check_script_choice(attrs: dict[str, Any], *, allow_name: bool) -> dict[str, Any]:
    """Exactly one of ``script_id``, ``script_contents`` or (when allowed) ``script_name``."""
    given = [
        key
        for key in ("script_id", "script_contents", "script_name")
        if attrs.get(key) not in (None, "") and (allow_name or key != "script_name")
    ]
    choices = "'script_id' or 'script_contents'" + (" or 'script_name'" if allow_name else "")
    if not given:
        raise serializers.ValidationError(f"One of {choices} is required.")
    if len(given) > 1:
        raise serializers.ValidationError(f"Only one of {choices} is allowed.")
    if attrs.get("team_id") not in (None, 0) and given[0] != "script_name" and allow_name:
        raise serializers.ValidationError("'team_id' goes with 'script_name' only.")
    return attrs


class ScriptRunAcceptedSerializer(serializers.Serializer):
    host_id = serializers.IntegerField()
    execution_id = serializers.CharField()


class SkippedHostsSerializer(serializers.Serializer):
    reason = serializers.CharField()
    host_ids = serializers.ListField(child=serializers.IntegerField())


class BatchScriptRunAcceptedSerializer(serializers.Serializer):
    execution_ids = serializers.ListField(child=serializers.CharField())
    queued = serializers.IntegerField()
    skipped = SkippedHostsSerializer(many=True)


class ScriptRunSerializer(serializers.ModelSerializer):
    """A run as a host's list shows it: state, output and who asked (the contents left out)."""

    script_id = serializers.IntegerField(read_only=True, allow_null=True)
    host_id = serializers.IntegerField(read_only=True)
    hostname = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    kind = serializers.ChoiceField(choices=ScriptKind.choices, read_only=True)
    message = serializers.SerializerMethodField()
    host_timeout = serializers.SerializerMethodField()
    requested_by = serializers.SerializerMethodField()

    class Meta:
        model = ScriptRun
        fields = [
            "execution_id",
            "host_id",
            "hostname",
            "kind",
            "script_id",
            "script_name",
            "status",
            "exit_code",
            "output",
            "message",
            "runtime",
            "timeout",
            "host_timeout",
            "requested_by",
            "created_at",
            "sent_at",
            "finished_at",
        ]
        read_only_fields = fields

    # Described rather than an enum in the schema: an enum would collide with the other "status" ones.
    @extend_schema_field(
        serializers.CharField(help_text="pending, ran (exit code 0), error (any other) or cancelled.")
    )
    def get_status(self, run: ScriptRun) -> str:
        return str(run.status)

    def get_hostname(self, run: ScriptRun) -> str:
        return run.host.hostname

    def _waited(self) -> float | None:
        return self.context.get("timed_out_waiting")

    def get_message(self, run: ScriptRun) -> str:
        return messages.result_message(run, timed_out_waiting=self._waited())

    def get_host_timeout(self, run: ScriptRun) -> bool:
        """True when a synchronous run's wait ran out before the host answered (Fleet's flag)."""
        return self._waited() is not None and run.exit_code is None and not run.cancelled

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_requested_by(self, run: ScriptRun) -> str | None:
        return run.requested_by_name or None


class ScriptResultSerializer(ScriptRunSerializer):
    """One run in full: Fleet's ``GET /scripts/results/<execution_id>`` with the script ran."""

    script_contents = serializers.CharField(source="contents", read_only=True)

    class Meta(ScriptRunSerializer.Meta):
        fields = [*ScriptRunSerializer.Meta.fields, "script_contents"]
        read_only_fields = fields


class DeviceActionAcceptedSerializer(serializers.Serializer):
    """What a lock, unlock or wipe request answers: its run and the host's state now."""

    execution_id = serializers.CharField(required=False, help_text="Linux and Windows: the script run.")
    command_uuid = serializers.CharField(required=False, help_text="Macs: the MDM command.")
    unlock_pin = serializers.CharField(required=False, help_text="Mac unlock: the PIN to type on the Mac.")
    device_status = serializers.ChoiceField(choices=["unlocked", "locked", "wiped"])
    pending_action = serializers.ChoiceField(choices=["", *DEVICE_ACTION_KINDS])
