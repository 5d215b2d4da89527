from typing import Any

from django import forms
from django.contrib import admin

from trainhub.compute import services
from trainhub.compute.models import ComputeCluster, Node, Provisioner


class ComputeClusterAdminForm(forms.ModelForm):
    class Meta:
        model = ComputeCluster
        fields = [
            "workspace",
            "name",
            "vm_size",
            "min_nodes",
            "max_nodes",
            "idle_seconds_before_scaledown",
            "provisioner",
            "slurm_partition",
            "created_by",
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        # The same checks as an attach through the API or the portal: Slurm must know the partition.
        if data.get("provisioner") == Provisioner.SLURM:
            services.check_slurm_partition(data.get("name", ""), data.get("slurm_partition", ""))
        elif data.get("slurm_partition"):
            raise forms.ValidationError({"slurm_partition": services.SLURM_PARTITION_ONLY})
        return data


@admin.register(ComputeCluster)
class ComputeClusterAdmin(admin.ModelAdmin):
    form = ComputeClusterAdminForm
    list_display = ["name", "workspace", "vm_size", "min_nodes", "max_nodes", "provisioner", "slurm_partition"]
    list_filter = ["provisioner", "vm_size"]
    search_fields = ["name", "workspace__name"]


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "cluster", "address", "state", "current_run", "last_heartbeat_at"]
    list_filter = ["state"]
    search_fields = ["name", "hostname", "address"]
    readonly_fields = [f.name for f in Node._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
