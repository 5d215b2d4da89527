from django.contrib import admin

from registry.models import Model, ModelVersion, OnnxExport


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "last_version", "updated_at"]
    search_fields = ["name", "workspace__name"]
    readonly_fields = [f.name for f in Model._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["model", "version", "framework", "run_identifier", "created_by", "created_at"]
    search_fields = ["model__name", "run_identifier"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(OnnxExport)
class OnnxExportAdmin(admin.ModelAdmin):
    list_display = ["source", "state", "max_abs_diff", "created_at"]
    readonly_fields = [f.name for f in OnnxExport._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
