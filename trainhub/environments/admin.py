"""The admin site: staff curate environments (a changed spec makes a new version) and build them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Max, QuerySet
from django.http import HttpRequest

from trainhub.environments import services
from trainhub.environments.forms import CuratedEnvironmentForm, WorkspaceEnvironmentForm
from trainhub.environments.models import Environment, EnvironmentBuild, EnvironmentVersion
from trainhub.workspaces.permissions import signed_in_user


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("curated", "Curated"), ("workspace", "Workspace")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "curated":
            return queryset.filter(workspace__isnull=True)
        if self.value() == "workspace":
            return queryset.filter(workspace__isnull=False)
        return queryset


class VersionInline(admin.TabularInline):
    model = EnvironmentVersion
    fields = readonly_fields = ("version", "spec", "spec_hash", "created_at", "created_by")
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Versions are made by saving the environment's spec above, never by hand.
        return False


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "workspace", "latest", "deprecated", "created_at"]
    list_filter = [KindFilter, "deprecated"]
    search_fields = ["name", "workspace__name"]
    inlines = [VersionInline]
    actions = ["build_now", "mark_deprecated", "mark_not_deprecated"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Environment]:
        return (
            super().get_queryset(request).select_related("workspace").annotate(latest_version=Max("versions__version"))
        )

    @admin.display(description="kind")
    def kind(self, obj: Environment) -> str:
        return "curated" if obj.is_curated else "workspace"

    @admin.display(description="latest version", ordering="latest_version")
    def latest(self, obj: Environment) -> int | None:
        return getattr(obj, "latest_version", None)

    def get_form(
        self,
        request: HttpRequest,
        obj: Environment | None = None,
        change: bool = False,
        **kwargs: Any,
    ):
        # Only curated environments are edited here; a workspace's own belong to its members.
        kwargs["form"] = WorkspaceEnvironmentForm if obj is not None and not obj.is_curated else CuratedEnvironmentForm
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Environment, form: Any, change: bool) -> None:
        if change and not obj.is_curated:
            obj.save(update_fields=["description", "deprecated"])
            return
        registration = services.curated_environment_save(
            user=signed_in_user(request),
            name=form.cleaned_data["name"],
            spec=form.cleaned_data["spec"],
            description=form.cleaned_data.get("description", ""),
            deprecated=form.cleaned_data.get("deprecated", False),
            environment=obj if change else None,
            answers_to=form.cleaned_data.get("answers_to", []),
        )
        obj.pk = registration.version.environment.pk
        version = registration.version.version
        if form.left_out_warning:
            messages.warning(request, form.left_out_warning)
        if registration.created:
            messages.info(request, f"{obj.name}: version {version} registered.")
        else:
            messages.info(request, f"{obj.name}: the spec is unchanged, still version {version}.")

    @admin.action(description="Build the latest version now (on the server's worker)")
    def build_now(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        count = 0
        for environment in queryset:
            latest = environment.versions.order_by("-version").first()
            if latest is not None:
                services.build_enqueue(user=signed_in_user(request), version=latest)
                count += 1
        self.message_user(
            request,
            f"{count} build(s) queued on the server's worker: each version page shows its log.",
        )

    @admin.action(description="Mark deprecated")
    def mark_deprecated(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        for environment in queryset:
            services.environment_set_deprecated(user=signed_in_user(request), environment=environment, deprecated=True)

    @admin.action(description="Mark not deprecated")
    def mark_not_deprecated(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        for environment in queryset:
            services.environment_set_deprecated(user=signed_in_user(request), environment=environment, deprecated=False)


@admin.register(EnvironmentBuild)
class EnvironmentBuildAdmin(admin.ModelAdmin):
    list_display = ["spec_hash", "version", "node", "status", "reason", "started_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["spec_hash", "node", "version__environment__name"]
    readonly_fields = [f.name for f in EnvironmentBuild._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
