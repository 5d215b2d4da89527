from django.urls import path

from trainhub.compute import views

app_name = "compute"

urlpatterns = [
    path("w/<str:workspace_name>/compute/", views.cluster_list, name="list"),
    path("w/<str:workspace_name>/compute/<str:name>/", views.cluster_detail, name="detail"),
]
