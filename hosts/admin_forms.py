"""Console forms: they validate through ``hosts.services`` so the console, REST and commands agree.

Django ``ValidationError``s raised by the services carry field names, so they land on the
right form field.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from hosts import services
from hosts.agent_options import validate_agent_options
from hosts.models import EnrollSecret, FleetSettings, Team
from usage.console import UsageSwitchFormMixin


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows the document indented, and checks it as agent options."""

    widget = forms.Textarea(
        attrs={"rows": 24, "cols": 100, "class": "vLargeTextField", "style": "font-family: monospace"}
    )

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value is not None:
            problems = validate_agent_options(value)
            if problems:
                raise ValidationError(problems)


def _field_errors(exc: ValidationError) -> ValidationError:
    """A service error reduced to its messages, for a ``clean_<field>`` method to raise."""
    return ValidationError(exc.messages)


def _raise_on_field(form: forms.BaseForm, exc: ValidationError) -> None:
    """Attach a service's ``ValidationError`` to the form's fields (or to the form).

    A field whose own validation already failed keeps only its own message: the service saw no
    value there (a 300-character name is "too long", not also "missing").
    """
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            if field in form.errors:
                continue
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


class TeamForm(forms.ModelForm):
    agent_options = PrettyJSONField(
        required=False,
        help_text="Leave empty to use the global agent options (Fleet settings).",
    )

    class Meta:
        model = Team
        fields = ["name", "description", "agent_options"]

    def clean_name(self) -> str:
        try:
            return services.validate_team_name(self.cleaned_data.get("name", ""), exclude_id=self.instance.pk)
        except ValidationError as exc:
            raise _field_errors(exc) from exc

    def validate_unique(self) -> None:
        """The name was checked by the service; the database constraint still guards races."""


class EnrollSecretForm(forms.ModelForm):
    class Meta:
        model = EnrollSecret
        fields = ["secret", "team"]
        help_texts = {"team": "Hosts enrolling with this secret join this team; empty means no team."}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk and "secret" in self.fields:
            # A strong random value by default; an admin can still type their own.
            self.fields["secret"].initial = services.generate_enroll_secret()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "secret" in cleaned:
            team = cleaned.get("team", self.instance.team if self.instance.team_id else None)
            try:
                cleaned["secret"] = services.validate_enroll_secret(
                    cleaned["secret"], team, exclude_id=self.instance.pk
                )
            except ValidationError as exc:
                _raise_on_field(self, exc)
        return cleaned

    def validate_unique(self) -> None:
        """Checked by ``validate_enroll_secret`` above."""


class TeamSecretInlineForm(forms.ModelForm):
    """A secret on the team page: its team is the page's team (maybe not saved yet)."""

    class Meta:
        model = EnrollSecret
        fields = ["secret"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["secret"].initial = services.generate_enroll_secret()

    def clean_secret(self) -> str:
        value = self.cleaned_data.get("secret", "")
        team = getattr(self.instance, "team", None)
        if team is not None and team.pk:
            try:
                return services.validate_enroll_secret(value, team, exclude_id=self.instance.pk)
            except ValidationError as exc:
                raise _field_errors(exc) from exc
        # A team being created has no secrets yet, so only the global uniqueness can clash;
        # the per-scope maximum is checked over the whole formset below.
        value = (value or "").strip()
        if EnrollSecret.objects.filter(secret=value).exists():
            raise ValidationError("This secret is already in use.")
        return value

    def validate_unique(self) -> None:
        """Checked in ``clean_secret``."""


class TeamSecretFormSet(forms.BaseInlineFormSet):
    """Checks what single forms cannot: duplicates among new rows and the 50-per-team maximum."""

    def clean(self) -> None:
        super().clean()
        values = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if data and not data.get("DELETE") and data.get("secret"):
                values.append(data["secret"])
        if len(values) != len(set(values)):
            raise ValidationError("The same secret is listed twice.")
        limit = settings.MAX_ENROLL_SECRETS_PER_SCOPE
        if len(values) > limit:
            raise ValidationError(f"A team can have at most {limit} enroll secrets.")


def https_urls(field: Any, **kwargs: Any) -> forms.Field | None:
    """A form field where URLs typed without a scheme mean https (Django 6's default; Django 5
    warns on every URL field that does not say so)."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class FleetSettingsForm(UsageSwitchFormMixin, forms.ModelForm):  # + the usage statistics checkbox
    agent_options = PrettyJSONField(
        required=False,
        help_text="Sent to every host without team options: config (osquery options, decorators), "
        "overrides.platforms (a config per platform) and command_line_flags (orbit).",
    )

    class Meta:
        model = FleetSettings
        formfield_callback = https_urls
        fields = [
            "org_name",
            "org_logo_url",
            "org_logo_url_light_background",
            "contact_url",
            "transparency_url",
            "scripts_disabled",
            "agent_options",
        ]

    def clean_agent_options(self) -> dict[str, Any]:
        return self.cleaned_data.get("agent_options") or {}


class TransferHostsForm(forms.Form):
    """The "Transfer to team" action's second step."""

    team = forms.ModelChoiceField(queryset=Team.objects.none(), required=False, empty_label="No team")

    def __init__(self, *args: Any, teams: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams if teams is not None else Team.objects.all()
