from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running TrainHub itself: the launcher, the Redis it may start, the demo it seeds."""

    name = "trainhub.ops"
    label = "ops"
