from django.apps import AppConfig


class MlflowCompatConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "mlflow_compat"
    verbose_name = "MLflow tracking API"
