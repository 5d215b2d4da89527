from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save


class RunsConfig(AppConfig):
    name = "runs"
    label = "runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from trainhub.workspaces.models import Membership

        post_delete.connect(_member_removed, sender=Membership, dispatch_uid="runs.member_removed")
        user_logged_out.connect(_signed_out, dispatch_uid="runs.signed_out")
        user = get_user_model()
        pre_save.connect(_note_password_change, sender=user, dispatch_uid="runs.note_password_change")
        post_save.connect(_password_changed, sender=user, dispatch_uid="runs.password_changed")


def _member_removed(sender, instance, **kwargs) -> None:
    """A removed member's open sockets on the workspace's runs close (runs.consumers)."""
    from runs.broadcast import broadcast, members_group

    broadcast(members_group(instance.workspace_id), "member.removed", {"user_id": instance.user_id})


def _signed_out(sender, request, user, **kwargs) -> None:
    """The sockets opened with the session being signed out close (sent before the session goes)."""
    from runs.broadcast import broadcast, user_group

    if user is not None and request.session.session_key:
        broadcast(user_group(user.pk), "session.ended", {"session_key": request.session.session_key})


def _note_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    # Whatever the path (the password-change view, the admin, set_password, changepassword), a new
    # password is a save whose password differs from the stored one.
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._trainhub_password_changed = stored is not None and stored != instance.password


def _password_changed(sender, instance, **kwargs) -> None:
    """Every open socket of a user whose password changed closes: its session no longer counts."""
    from runs.broadcast import broadcast, user_group

    if getattr(instance, "_trainhub_password_changed", False):
        instance._trainhub_password_changed = False
        user_pk = instance.pk
        transaction.on_commit(lambda: broadcast(user_group(user_pk), "password.changed", {}))
