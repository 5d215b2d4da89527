from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.utils import timezone

from trainhub import live
from trainhub.workspaces.models import ApiToken, Membership, Workspace
from trainhub.workspaces.services import members_removed

User = get_user_model()


class ClosingUserAdmin(UserAdmin):
    """Django's user admin, except that a deleted user's open sockets close once the delete commits
    (their memberships go with them, and a socket outlives the sign-in that opened it)."""

    def delete_model(self, request, obj) -> None:
        user_pk = obj.pk
        super().delete_model(request, obj)
        transaction.on_commit(lambda: live.close_user_sockets(user_pk))

    def delete_queryset(self, request, queryset) -> None:
        user_pks = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)

        def close() -> None:
            for pk in user_pks:
                live.close_user_sockets(pk)

        transaction.on_commit(close)


admin.site.unregister(User)
admin.site.register(User, ClosingUserAdmin)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "created_by"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def save_formset(self, request, form, formset, change) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is Membership:
            members_removed(formset.deleted_objects)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["workspace", "user", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["workspace__name", "user__username"]
    autocomplete_fields = ["user", "workspace"]

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        members_removed([obj])

    def delete_queryset(self, request, queryset) -> None:
        removed = list(queryset)
        super().delete_queryset(request, queryset)
        members_removed(removed)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "workspace", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["prefix", "token_hash", "created_at", "last_used_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        # A token made here could never be shown to anyone: they are made from the workspace page.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
