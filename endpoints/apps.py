from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "endpoints"
    label = "endpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: it imports models, which Django loads before ready().
        from endpoints import services
        from runs import events

        events.run_ended.subscribe(services.replica_run_ended)
