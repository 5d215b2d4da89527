"""MLflow's REST API under a workspace: MLFLOW_TRACKING_URI=http://server/mlflow/<workspace>."""

from django.urls import path

from mlflow_compat import views

app_name = "mlflow"
urlpatterns = [
    path("mlflow/<str:workspace_name>/", views.links, name="links"),
    path("mlflow/<str:workspace_name>/api/2.0/mlflow-artifacts/artifacts", views.artifacts_list, name="artifacts"),
    path(
        "mlflow/<str:workspace_name>/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
        views.artifact,
        name="artifact",
    ),
    path("mlflow/<str:workspace_name>/api/2.0/mlflow/<path:endpoint>", views.tracking, name="tracking"),
    path("mlflow/<str:workspace_name>/<path:endpoint>", views.not_served, name="not-served"),
]
