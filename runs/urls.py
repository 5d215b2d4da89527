from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path("w/<str:workspace_name>/experiments/", views.experiment_list, name="experiments"),
    path("w/<str:workspace_name>/experiments/<str:name>/", views.experiment_detail, name="experiment"),
    path("w/<str:workspace_name>/run-states/", views.run_states, name="states"),
    path("w/<str:workspace_name>/runs/<str:run_id>/", views.run_detail, name="detail"),
    path("w/<str:workspace_name>/runs/<str:run_id>/cancel/", views.run_cancel, name="cancel"),
    path("w/<str:workspace_name>/runs/<str:run_id>/edit/", views.run_edit, name="edit"),
    path("w/<str:workspace_name>/runs/<str:run_id>/file", views.run_file, name="file"),
    path("w/<str:workspace_name>/runs/<str:run_id>/log.txt", views.run_log_download, name="log"),
]
