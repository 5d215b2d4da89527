from django.contrib import admin

from runs.models import Experiment, Run, Snapshot


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "created_at"]
    search_fields = ["name", "workspace__name"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["run_id", "experiment", "status", "created_at", "ended_at"]
    list_filter = ["status"]
    search_fields = ["run_id", "experiment__name"]
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["sha256", "workspace", "size", "created_at"]
    readonly_fields = [f.name for f in Snapshot._meta.fields]
