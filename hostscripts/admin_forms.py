"""Console forms for scripts: the library's editor, the run form, and the wipe confirmation.

They check through the same functions as REST (``hostscripts.validation``, the uniqueness check
of ``hostscripts.services``), so a bad script gets the same message on every surface, here as an
error on the field it concerns.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from hosts.models import Host, Team
from hosts.permissions import visible_team_ids
from hostscripts import access, library, services
from hostscripts.models import Script
from hostscripts.validation import MAX_ADHOC_CHARS, MAX_SAVED_CHARS, validate_contents, validate_name

MONOSPACE = "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px"


def code_area(rows: int, max_chars: int) -> forms.Textarea:
    return forms.Textarea(
        attrs={
            "rows": rows,
            "cols": 110,
            "spellcheck": "false",
            "class": "vLargeTextField script-contents",
            "maxlength": max_chars,  # the browser stops there, before the server must refuse
            "style": MONOSPACE,
        }
    )


class ScriptForm(forms.ModelForm):
    """A saved script: typed in the editor, or uploaded (the file's name becomes the script's)."""

    upload = forms.FileField(
        required=False,
        label="Or upload a file",
        help_text="A .sh or .ps1 file: it replaces the contents above (and names the script if unnamed).",
    )
    user: Any = None  # set by ScriptAdmin.get_form

    class Meta:
        model = Script
        fields = ["name", "team", "contents"]
        widgets = {"contents": code_area(24, MAX_SAVED_CHARS)}
        help_texts = {
            "contents": "Shell scripts run with /bin/sh (or the #!/bin/zsh shebang) on macOS and Linux, "
            "PowerShell on Windows, as root or SYSTEM.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("name", "contents"):
            if name in self.fields:
                self.fields[name].required = False  # either may come from the upload
        if "contents" in self.fields:
            self.fields["contents"].strip = False  # a script is kept as typed, to the last newline
        team_field = self.fields.get("team")
        if team_field is None:  # the read-only view
            return
        for flag in ("can_add_related", "can_change_related", "can_delete_related", "can_view_related"):
            setattr(team_field.widget, flag, False)  # no team editing from a script's form
        if self.instance.pk:
            team_field.disabled = True
            team_field.help_text = "A script stays in its team; save a copy in the other team instead."
        team_ids = visible_team_ids(self.user, access.SCRIPT_WRITE_ROLES) if self.user else None
        if team_ids is not None and not self.instance.pk:
            team_field.queryset = Team.objects.filter(id__in=team_ids)
            team_field.required = True  # only global roles save global scripts
        team_field.empty_label = "Global (every host)"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("upload")
        if upload:
            try:
                data["contents"] = library.uploaded_text(upload)
            except ValidationError as exc:
                self.add_error("upload", exc)
                return data
            if not data.get("name"):
                data["name"] = upload.name
        self._check(data)
        return data

    def _check(self, data: dict[str, Any]) -> None:
        """The service's checks, each attached to the field it is about."""
        try:
            data["name"] = validate_name(data.get("name") or "")
        except ValidationError as exc:
            self.add_error("name" if not data.get("upload") or data.get("name") else "upload", exc)
        contents = (data.get("contents") or "").replace("\r\n", "\n")
        try:
            data["contents"] = validate_contents(contents, saved=True)
        except ValidationError as exc:
            self.add_error("upload" if data.get("upload") else "contents", exc)
        team = self.instance.team if self.instance.pk else data.get("team")
        if self.user is not None and not access.may_write_script(self.user, team.pk if team else None):
            self.add_error("team" if "team" in self.fields else None, access.NOT_ALLOWED_TO_WRITE)
        if "name" in data and not self.has_error("name"):
            try:
                services.check_unique_name(
                    data["name"], team.pk if team else None, exclude_id=self.instance.pk
                )
            except ValidationError as exc:
                self.add_error("name", exc)

    def validate_unique(self) -> None:
        """Checked in ``_check`` with the service's message; the constraint still guards races."""


def runnable_scripts(user: Any, team_ids: set[int | None] | None = None) -> QuerySet[Script]:
    """Saved scripts the user may run: readable ones, global or of ``team_ids`` when given."""
    scripts = access.readable_scripts(Script.objects.select_related("team").defer("contents"), user)
    if team_ids is not None:
        teams = [t for t in team_ids if t is not None]
        scripts = scripts.filter(Q(team__isnull=True) | Q(team_id__in=teams))
    return scripts.order_by("team__name", "name")


class ScriptChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Script) -> str:
        return f"{obj.name} ({obj.team.name if obj.team_id else 'global'})"


class RunScriptForm(forms.Form):
    """A saved script, or contents typed for this run only (at most 10,000 characters)."""

    script = ScriptChoiceField(
        queryset=Script.objects.none(), required=False, empty_label="— type one below —"
    )
    contents = forms.CharField(
        required=False,
        strip=False,
        widget=code_area(8, MAX_ADHOC_CHARS),
        label="Or run this",
        help_text="Run once, not saved. Shell on macOS and Linux, PowerShell on Windows.",
    )

    def __init__(self, *args: Any, scripts: QuerySet[Script], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["script"].queryset = scripts

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        script, contents = data.get("script"), data.get("contents") or ""
        if script is None and not contents.strip():
            raise ValidationError("Choose a saved script or type one.")
        if script is not None and contents.strip():
            raise ValidationError("Choose a saved script or type one, not both.")
        if script is None:
            try:
                data["contents"] = validate_contents(contents.replace("\r\n", "\n"), saved=False)
            except ValidationError as exc:
                self.add_error("contents", exc)
        return data

    def run_kwargs(self) -> dict[str, Any]:
        """``script=`` or ``contents=`` for ``services.queue_runs``."""
        script = self.cleaned_data.get("script")
        return {"script": script} if script is not None else {"contents": self.cleaned_data["contents"]}


class WipeConfirmForm(forms.Form):
    """Wiping erases the host: the admin types its name to show they mean this one."""

    hostname = forms.CharField(label="Type the host's name to confirm", max_length=255, strip=True)

    def __init__(self, *args: Any, host: Host, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.fields["hostname"].widget.attrs.update({"autocomplete": "off", "spellcheck": "false"})

    def clean_hostname(self) -> str:
        typed = self.cleaned_data["hostname"]
        names = {n for n in (self.host.hostname, self.host.display_name) if n}
        if typed not in names:
            raise ValidationError(f"That is not this host's name: type {self.host.display_name} exactly.")
        return typed
