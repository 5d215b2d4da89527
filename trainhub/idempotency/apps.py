from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    """Answers kept by `Idempotency-Key`, so that a client's retried POST is stored once."""

    name = "trainhub.idempotency"
    label = "idempotency"
    default_auto_field = "django.db.models.BigAutoField"
