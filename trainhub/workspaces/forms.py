"""Forms of the workspace pages."""

from __future__ import annotations

from django import forms

from trainhub.workspaces.models import NAME_PATTERN, Role


class WorkspaceForm(forms.Form):
    name = forms.RegexField(
        regex=NAME_PATTERN,
        max_length=63,
        error_messages={"invalid": "Use 1 to 63 letters, digits, '-' or '_', starting with a letter or digit."},
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.CONTRIBUTOR)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)


class ConfigForm(forms.Form):
    include_token = forms.BooleanField(required=False)
