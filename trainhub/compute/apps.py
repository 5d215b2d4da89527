from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "trainhub.compute"
    label = "compute"
    default_auto_field = "django.db.models.BigAutoField"
