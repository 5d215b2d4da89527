from django.contrib import admin

from trainhub.compute.models import ComputeCluster, Node


@admin.register(ComputeCluster)
class ComputeClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "vm_size", "min_nodes", "max_nodes", "provisioner"]
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
