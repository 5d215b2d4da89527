from django.urls import path

from trainhub.environments import views

app_name = "environments"

urlpatterns = [
    path("w/<str:workspace_name>/environments/", views.environment_list, name="list"),
    path("w/<str:workspace_name>/environments/<str:name>/", views.environment_detail, name="detail"),
    path(
        "w/<str:workspace_name>/environments/<str:name>/clone/",
        views.environment_clone,
        name="clone",
    ),
    path(
        "w/<str:workspace_name>/environments/<str:name>/versions/<int:version>/",
        views.version_detail,
        name="version",
    ),
]
