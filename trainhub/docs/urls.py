from django.urls import path

from trainhub.docs import views

app_name = "docs"

urlpatterns = [
    path("docs/<str:name>/", views.page, name="page"),
]
