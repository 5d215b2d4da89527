from django.urls import path

from endpoints import views

app_name = "endpoints"

urlpatterns = [
    path("w/<str:workspace_name>/endpoints/", views.endpoint_list, name="list"),
    path("w/<str:workspace_name>/endpoints/<str:name>/", views.endpoint_detail, name="detail"),
    path("w/<str:workspace_name>/endpoints/<str:name>/keys/", views.endpoint_key, name="key"),
    path("w/<str:workspace_name>/endpoints/<str:name>/try/", views.endpoint_try, name="try"),
    path("w/<str:workspace_name>/endpoints/<str:name>/delete/", views.endpoint_delete, name="delete"),
]
