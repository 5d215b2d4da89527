from django.urls import path

from registry import views

app_name = "registry"

urlpatterns = [
    path("w/<str:workspace_name>/models/", views.model_list, name="list"),
    path("w/<str:workspace_name>/models/<str:name>/", views.model_detail, name="model"),
    path(
        "w/<str:workspace_name>/models/<str:name>/<int:version>/",
        views.version_detail,
        name="version",
    ),
    path(
        "w/<str:workspace_name>/models/<str:name>/<int:version>/download",
        views.version_download_view,
        name="download",
    ),
    path(
        "w/<str:workspace_name>/models/<str:name>/<int:version>/file",
        views.version_file,
        name="file",
    ),
    path(
        "w/<str:workspace_name>/models/<str:name>/<int:version>/export-onnx/",
        views.version_export,
        name="export",
    ),
    path(
        "w/<str:workspace_name>/models/<str:name>/<int:version>/delete/",
        views.version_delete,
        name="delete",
    ),
]
