from django.urls import path

from sweeps import views

app_name = "sweeps"

urlpatterns = [
    path("w/<str:workspace_name>/sweeps/<str:run_id>/", views.sweep_detail, name="detail"),
    path("w/<str:workspace_name>/sweeps/<str:run_id>/data.json", views.sweep_data, name="data"),
    path("w/<str:workspace_name>/sweeps/<str:run_id>/cancel/", views.sweep_cancel, name="cancel"),
]
