"""Forms of the environment pages and of the admin's curated environments."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from trainhub.environments.builders import direct_urls_allowed
from trainhub.environments.curated import CURATED_NEEDS_PREFIX, RESERVED_PREFIX
from trainhub.environments.models import NAME_MESSAGE, NAME_PATTERN, Environment
from trainhub.environments.services import curated_answers_to_clean
from trainhub.environments.spec import DEFAULT_PYTHON, USER_MANAGED, SpecError, normalise_spec
from trainhub.sdk.environment import AZUREML_LEFT_OUT, split_cloud_sdk_packages


class CloneForm(forms.Form):
    new_name = forms.RegexField(regex=NAME_PATTERN, max_length=127, error_messages={"invalid": NAME_MESSAGE})
    version = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class CuratedEnvironmentForm(forms.ModelForm):
    """A curated environment and the spec of its next version; an unchanged spec adds no version."""

    python = forms.CharField(initial=DEFAULT_PYTHON, max_length=20, help_text="X.Y, e.g. 3.11")
    pip = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One requirement per line, e.g. torch==2.13.0",
    )
    conda = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="conda packages, one per line (installed when the pip indexes have them).",
    )
    channels = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    docker_enabled = forms.BooleanField(required=False, label="Docker enabled")
    docker_base_image = forms.CharField(required=False, max_length=500, label="Docker base image")
    docker_base_dockerfile = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), label="Docker base Dockerfile"
    )
    environment_variables = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="NAME=value, one per line",
    )
    user_managed_dependencies = forms.BooleanField(
        required=False,
        label="User-managed dependencies",
        help_text="On compute_target='local' a run uses the submitter's own Python as it is; "
        "cluster nodes build the packages above anyway.",
    )
    answers_to = forms.CharField(
        required=False,
        label="Answers to",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="The cloud SDK's curated names (AzureML-…) that find this environment, one per line.",
    )

    class Meta:
        model = Environment
        fields = ["name", "description", "deprecated"]

    # The SDK's warning when the pip list held the cloud SDK's packages, which the form left out.
    left_out_warning = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        latest = self.instance.versions.order_by("-version").first() if self.instance.pk else None
        if latest is not None:
            spec = normalise_spec(latest.spec, allow_direct_urls=True)
            self.initial.update(
                python=spec["python"],
                pip="\n".join(spec["pip"]),
                conda="\n".join(spec["conda"]),
                channels="\n".join(spec["channels"]),
                docker_enabled=spec["docker"]["enabled"],
                docker_base_image=spec["docker"]["base_image"] or "",
                docker_base_dockerfile=spec["docker"]["base_dockerfile"] or "",
                environment_variables="\n".join(f"{k}={v}" for k, v in spec["environment_variables"].items()),
                user_managed_dependencies=spec.get(USER_MANAGED, False),
            )
        if self.instance.pk:
            self.initial["answers_to"] = "\n".join(self.instance.answers_to or [])

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name.startswith(RESERVED_PREFIX):
            raise forms.ValidationError(CURATED_NEEDS_PREFIX)
        return name

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        variables = {}
        for line in _lines(data.get("environment_variables", "")):
            name, sep, value = line.partition("=")
            if not sep:
                self.add_error("environment_variables", f"{line!r} is not NAME=value.")
                return data
            variables[name.strip()] = value
        pip, left_out = split_cloud_sdk_packages(_lines(data.get("pip", "")))
        if left_out:
            self.left_out_warning = AZUREML_LEFT_OUT.format(where="pip", packages=", ".join(left_out))
        raw = {
            "python": data.get("python"),
            "pip": pip,
            "conda": _lines(data.get("conda", "")),
            "channels": _lines(data.get("channels", "")),
            "docker": {
                "enabled": bool(data.get("docker_enabled")),
                "base_image": data.get("docker_base_image") or None,
                "base_dockerfile": data.get("docker_base_dockerfile") or None,
            },
            "environment_variables": variables,
            USER_MANAGED: bool(data.get("user_managed_dependencies")),
        }
        try:
            data["answers_to"] = curated_answers_to_clean(
                environment=self.instance, names=_lines(data.get("answers_to", ""))
            )
        except ValidationError as error:
            self.add_error("answers_to", error)
            return data
        try:
            data["spec"] = normalise_spec(raw, allow_direct_urls=direct_urls_allowed())
        except SpecError as error:
            raise forms.ValidationError(str(error)) from None
        return data


class WorkspaceEnvironmentForm(forms.ModelForm):
    """A workspace's environment as administrators see it: its versions belong to its workspace."""

    class Meta:
        model = Environment
        fields = ["description", "deprecated"]
