from django.urls import path

from metrics import views

app_name = "metrics"

urlpatterns = [
    path("w/<str:workspace_name>/runs/<str:run_id>/metrics.csv", views.run_metrics_csv, name="csv"),
    path(
        "w/<str:workspace_name>/experiments/<str:name>/metrics/",
        views.experiment_metrics,
        name="experiment",
    ),
    path("w/<str:workspace_name>/experiments/<str:name>/compare/", views.compare, name="compare"),
    path("w/<str:workspace_name>/runs/", views.workspace_runs, name="runs"),
    path("w/<str:workspace_name>/run-table-states/", views.table_states, name="table-states"),
    path("w/<str:workspace_name>/run-table-rows/", views.table_new_rows, name="table-new-rows"),
    path("w/<str:workspace_name>/compare/", views.compare_across, name="compare-across"),
]
