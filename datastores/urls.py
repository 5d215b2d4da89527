from django.urls import path

from datastores import views

app_name = "datastores"

urlpatterns = [
    path("w/<str:workspace_name>/data/", views.data_list, name="list"),
    path("w/<str:workspace_name>/data/stores/<str:name>/", views.datastore_detail, name="datastore"),
    path("w/<str:workspace_name>/data/files/<str:sha256>/", views.data_file, name="file"),
    path("w/<str:workspace_name>/data/sets/<str:name>/", views.dataset_detail, name="dataset"),
    path("w/<str:workspace_name>/data/sets/<str:name>/<int:version>/", views.dataset_version_detail, name="version"),
]
