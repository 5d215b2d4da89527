"""The form to create a compute cluster from the portal."""

from __future__ import annotations

from django import forms

from trainhub.compute import catalog
from trainhub.compute.models import Provisioner
from trainhub.workspaces.models import NAME_PATTERN


class ClusterForm(forms.Form):
    name = forms.RegexField(regex=NAME_PATTERN, max_length=63)
    vm_size = forms.ChoiceField(choices=[(s.name, f"{s.name} — {s.description}") for s in catalog.SIZES.values()])
    min_nodes = forms.IntegerField(min_value=0, initial=0)
    max_nodes = forms.IntegerField(min_value=1, initial=4)
    idle_seconds_before_scaledown = forms.IntegerField(min_value=0, initial=1800)
    provisioner = forms.ChoiceField(
        choices=[c for c in Provisioner.choices if c[0] != Provisioner.SUBMITTER], initial=Provisioner.LOCAL
    )
    slurm_partition = forms.CharField(
        max_length=63, required=False, help_text="For a Slurm compute target: the partition its runs go to."
    )
