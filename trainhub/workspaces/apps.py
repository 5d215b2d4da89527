from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_save, pre_save

from trainhub import live


class WorkspacesConfig(AppConfig):
    name = "trainhub.workspaces"
    label = "workspaces"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Whatever the path (the password-change page, the admin, set_password, changepassword), a
        # new password or a deactivation is a save of the user: only a signal sees them all.
        user = get_user_model()
        pre_save.connect(_note_password_change, sender=user, dispatch_uid="workspaces.note_password_change")
        post_save.connect(_password_changed, sender=user, dispatch_uid="workspaces.password_changed")


def _note_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    instance._trainhub_password_changed = stored is not None and (
        stored[0] != instance.password or (stored[1] and not instance.is_active)
    )


def _password_changed(sender, instance, **kwargs) -> None:
    """Every open socket of a user whose password changed, or who was deactivated, closes: its
    session no longer counts."""
    if getattr(instance, "_trainhub_password_changed", False):
        instance._trainhub_password_changed = False
        user_pk = instance.pk
        transaction.on_commit(lambda: live.close_user_sockets(user_pk))
