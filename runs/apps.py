from django.apps import AppConfig
from django.db.models.signals import post_delete


class RunsConfig(AppConfig):
    name = "runs"
    label = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from trainhub.workspaces.models import Membership

        post_delete.connect(_member_removed, sender=Membership, dispatch_uid="runs.member_removed")


def _member_removed(sender, instance, **kwargs) -> None:
    """A removed member's open sockets on the workspace's runs close (runs.consumers)."""
    from runs.broadcast import broadcast, members_group

    broadcast(members_group(instance.workspace_id), "member.removed", {"user_id": instance.user_id})
