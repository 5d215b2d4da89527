from django.apps import AppConfig


class DatastoresConfig(AppConfig):
    name = "datastores"
    default_auto_field = "django.db.models.BigAutoField"
