from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    label = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: they import models, which Django loads before ready().
        from runs import events, scheduling, slurm
        from runs.selectors import queued_node_demand
        from trainhub.compute.selectors import register_node_demand

        # The compute app tells a cluster's target size from the nodes its waiting runs ask for.
        register_node_demand(queued_node_demand)
        events.run_submitted.subscribe(scheduling.place_submitted)
        events.run_queued.subscribe(scheduling.dispatch_cluster)
        events.run_stopping.subscribe(slurm.cancel)
