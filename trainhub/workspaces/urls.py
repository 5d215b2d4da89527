from django.urls import path

from trainhub.workspaces import views

app_name = "workspaces"

urlpatterns = [
    path("workspaces/", views.workspace_list, name="list"),
    path("w/<str:workspace_name>/members/", views.member_list, name="members"),
    path("w/<str:workspace_name>/members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path(
        "w/<str:workspace_name>/members/<int:membership_id>/remove/",
        views.member_remove,
        name="member-remove",
    ),
    path("w/<str:workspace_name>/tokens/", views.token_list, name="tokens"),
    path("w/<str:workspace_name>/tokens/<int:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("w/<str:workspace_name>/config.json", views.config_download, name="config"),
]
