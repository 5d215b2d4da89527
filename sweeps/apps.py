from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "sweeps"
    label = "sweeps"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: they import models, which Django loads before ready().
        from metrics import events as metrics_events
        from runs import events as run_events
        from sweeps import services

        run_events.run_ended.subscribe(services.child_ended)
        run_events.controller_tick.subscribe(services.sweeps_tick)
        run_events.run_cancel_asked.subscribe(services.cancel_as_sweep)
        metrics_events.metrics_logged.subscribe(services.child_logged)
