"""URL root: pages of each app, the admin, the RQ dashboard and the JSON API."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from trainhub import overview
from trainhub.api import api
from trainhub.workspaces.signout import closing_sockets

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="workspaces:list"), name="home"),
    # Browsers ask for /favicon.ico whatever the page's <link rel="icon"> says.
    path("favicon.ico", RedirectView.as_view(url=static("trainhub/favicon.svg"), permanent=True)),
    path("accounts/logout/", closing_sockets(LogoutView.as_view()), name="logout"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/logout/", closing_sockets(admin.site.admin_view(admin.site.logout))),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("api/v1/", api.urls),
    path("w/<str:workspace_name>/", overview.workspace_overview, name="workspace-overview"),
    path("", include("trainhub.workspaces.urls")),
    path("", include("trainhub.environments.urls")),
    path("", include("trainhub.compute.urls")),
    path("", include("runs.urls")),
    path("", include("registry.urls")),
    path("", include("endpoints.urls")),
    path("", include("metrics.urls")),
    path("", include("datastores.urls")),
    path("", include("sweeps.urls")),
    path("", include("trainhub.docs.urls")),
    path("", include("mlflow_compat.urls")),
]
