"""Writes of sweeps: submit, advance (policy, limits, next children, the end), cancel.

`sweep_advance` is the one function that moves a sweep on. It reads everything from the database
and may run in any process, any number of times, concurrently: a child is made by inserting its
(sweep, index) row, which only one process can do.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs import services as run_services
from runs.models import ACTIVE_STATUSES, FINAL_STATUSES, Run, RunStatus
from sweeps import policies, sampling
from sweeps.models import Sweep, SweepChild
from sweeps.selectors import ended_history, primary_metric_values
from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.train.hyperdrive import policy as sdk_policy
from trainhub.sdk.train.hyperdrive import runconfig as sdk_config
from trainhub.workspaces.permissions import Access, Action

logger = logging.getLogger(__name__)
# A child the sweep itself cancels ends inside sweep_advance; that advance goes on by itself.
_advancing = threading.local()

POLICY_TYPES = {
    "BanditPolicy": sdk_policy.BanditPolicy,
    "MedianStoppingPolicy": sdk_policy.MedianStoppingPolicy,
    "TruncationSelectionPolicy": sdk_policy.TruncationSelectionPolicy,
    "NoTerminationPolicy": sdk_policy.NoTerminationPolicy,
}
POLICY_FIELDS = (
    "evaluation_interval",
    "delay_evaluation",
    "slack_factor",
    "slack_amount",
    "truncation_percentage",
    "exclude_finished_jobs",
)
BAD_POLICY = "policy.type is one of: " + ", ".join(POLICY_TYPES) + "."
CANCELED = "Canceled by the user."
CHILD_CANCELED = "Canceled with its sweep."
TOTAL_REACHED = "max_total_runs ({count}) reached."
DURATION_REACHED = "max_duration_minutes ({minutes}) reached: the children still running were canceled."
DURATION_CANCELED = "Canceled: its sweep reached max_duration_minutes ({minutes})."
EVERY_CHILD_FAILED = "Every child failed."


def _check_policy(policy: Any) -> dict[str, Any]:
    if policy is None:
        policy = {"type": "NoTerminationPolicy"}
    if not isinstance(policy, dict) or policy.get("type") not in POLICY_TYPES:
        raise ValidationError(BAD_POLICY)
    kind = POLICY_TYPES[policy["type"]]
    given = {key: policy[key] for key in POLICY_FIELDS if policy.get(key) is not None}
    try:
        checked = kind() if kind is sdk_policy.NoTerminationPolicy else kind(**given)
    except (UserErrorException, TypeError) as error:
        raise ValidationError(str(error)) from None
    return checked.to_json()


def _count(value: Any, top: int, message: str) -> int:
    """A whole number from 1 to `top`, or the SDK's message naming what was given."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ValidationError(message.format(given=value))
    return value


def check_spec(spec: Any) -> dict[str, Any]:
    """The sweep's settings as the SDK's HyperDriveConfig checks them, with the same messages."""
    if not isinstance(spec, dict):
        raise ValidationError("The sweep's settings are a JSON object.")
    checked_sampling = sampling.check_sampling(spec.get("sampling"))
    checked_policy = _check_policy(spec.get("policy"))
    if checked_sampling["type"] == "bayesian" and checked_policy["type"] != "NoTerminationPolicy":
        raise ValidationError(sdk_config.BAYESIAN_NO_POLICY)
    metric = spec.get("primary_metric_name")
    if not isinstance(metric, str) or not metric.strip() or len(metric) > 255:
        raise ValidationError(sdk_config.BAD_METRIC.format(given=metric))
    goal = spec.get("primary_metric_goal")
    if goal not in ("MAXIMIZE", "MINIMIZE"):
        raise ValidationError(sdk_config.BAD_GOAL.format(given=goal))
    total = _count(spec.get("max_total_runs"), sdk_config.MAX_TOTAL_RUNS, sdk_config.BAD_TOTAL)
    concurrent = _count(spec.get("max_concurrent_runs"), sdk_config.MAX_CONCURRENT_RUNS, sdk_config.BAD_CONCURRENT)
    minutes = spec.get("max_duration_minutes")
    if minutes is not None:
        minutes = _count(minutes, sdk_config.MAX_DURATION_MINUTES, sdk_config.BAD_DURATION)
    if checked_sampling["type"] == "grid":
        total = min(total, sampling.grid_size(checked_sampling))
    return {
        "sampling": checked_sampling,
        "policy": checked_policy,
        "primary_metric_name": metric,
        "primary_metric_goal": goal,
        "max_total_runs": total,
        "max_concurrent_runs": min(concurrent, total),
        "max_duration_minutes": minutes,
    }


def sweep_submit(*, access: Access, user: User | None, experiment_name: str, spec: Any, run: dict[str, Any]) -> Sweep:
    """A sweep's parent run and its first children. `run` holds run_submit's arguments (checked
    there exactly as a run's), which every child repeats with its own hyperparameters appended."""
    access.require(Action.WRITE)
    checked = check_spec(spec)
    with transaction.atomic():
        parent = run_services.run_submit(
            access=access, user=user, experiment_name=experiment_name, sweep_parent=True, **run
        )
        sweep = Sweep.objects.create(parent=parent, **checked)
    # Its first children: a failure here leaves a sweep the controller's tick starts, not a failed submit.
    transaction.on_commit(lambda: sweep_advance_safely(parent.pk))
    return sweep


def sweep_cancel(*, access: Access, sweep: Sweep) -> Sweep:
    """No child starts any more; every child still queued or running is canceled; the sweep's run
    ends Canceled once they all have."""
    access.require(Action.WRITE)
    Sweep.objects.filter(pk=sweep.pk, end_reason="").update(end_reason=CANCELED)
    for child in Run.objects.filter(parent=sweep.parent_id, status__in=ACTIVE_STATUSES):
        run_services.run_stop(child, reason=CHILD_CANCELED)
    sweep_advance(sweep.pk)
    sweep.refresh_from_db()
    return sweep


def sweep_advance_safely(parent_run_pk: int) -> None:
    """sweep_advance for callers whose own work must not fail with it (a node ending a child)."""
    if getattr(_advancing, "active", False):
        return
    try:
        sweep = Sweep.objects.filter(parent_id=parent_run_pk).values_list("pk", flat=True).first()
        if sweep is not None:
            sweep_advance(sweep)
    except Exception:
        logger.exception("advancing the sweep of run %s failed; the controller's tick tries again", parent_run_pk)


def child_ended(run: Run) -> None:
    """A sweep's child ended: the sweep starts its next child at once (the controller's tick
    catches up on any end this process did not live to hand over)."""
    if run.parent_id is not None:
        sweep_advance_safely(run.parent_id)


def child_logged(run: Run) -> None:
    """A sweep's child logged metrics: its policy looks at the new values once they are stored,
    not at the next tick."""
    parent_pk = run.parent_id
    if parent_pk is not None:
        transaction.on_commit(lambda: sweep_advance_safely(parent_pk))


def cancel_as_sweep(access: Access, run: Run) -> bool:
    """The run of a sweep is canceled by canceling its sweep (False for any other run)."""
    sweep = Sweep.objects.filter(parent=run).first()
    if sweep is None:
        return False
    sweep_cancel(access=access, sweep=sweep)
    return True


def sweeps_tick() -> None:
    """Move on every sweep whose run is still running (the controller calls it every few seconds):
    the time limit, and whatever a process that died was about to do."""
    for sweep_pk in Sweep.objects.filter(parent__status=RunStatus.RUNNING).values_list("pk", flat=True):
        try:
            sweep_advance(sweep_pk)
        except Exception:
            logger.exception("advancing sweep %s failed", sweep_pk)


def sweep_advance(sweep_pk: int) -> None:
    sweep = Sweep.objects.select_related("parent").get(pk=sweep_pk)
    if sweep.parent.status != RunStatus.RUNNING:
        return
    outer = getattr(_advancing, "active", False)
    _advancing.active = True
    try:
        _apply_policy(sweep)
        _apply_time_limit(sweep)
        while not sweep.end_reason and _start_next(sweep):
            pass
        _end_when_done(sweep)
    finally:
        _advancing.active = outer


def _children(sweep: Sweep) -> list[SweepChild]:
    return list(SweepChild.objects.filter(sweep=sweep).select_related("run").order_by("index"))


def _apply_policy(sweep: Sweep) -> None:
    if sweep.policy.get("type") == "NoTerminationPolicy":
        return
    children = _children(sweep)
    running = {child.index for child in children if child.run.status in ACTIVE_STATUSES}
    if not running:
        return
    values = primary_metric_values(sweep, children)
    for index, reason in policies.to_stop(
        sweep.policy, maximize=sweep.maximize, values=values, running=running
    ).items():
        child = next(child for child in children if child.index == index)
        run_services.run_stop(child.run, reason=reason)


def _apply_time_limit(sweep: Sweep) -> None:
    minutes, started = sweep.max_duration_minutes, sweep.parent.started_at
    if minutes is None or started is None or sweep.end_reason:
        return
    if timezone.now() - started < timedelta(minutes=minutes):
        return
    if Sweep.objects.filter(pk=sweep.pk, end_reason="").update(end_reason=DURATION_REACHED.format(minutes=minutes)):
        sweep.refresh_from_db(fields=["end_reason"])
        for child in Run.objects.filter(parent=sweep.parent_id, status__in=ACTIVE_STATUSES):
            run_services.run_stop(child, reason=DURATION_CANCELED.format(minutes=minutes))


def _start_next(sweep: Sweep) -> bool:
    """Make the next child if the limits allow; False when none was made."""
    made = SweepChild.objects.filter(sweep=sweep).count()
    in_flight = Run.objects.filter(parent=sweep.parent_id, status__in=ACTIVE_STATUSES).count()
    if made < sweep.max_total_runs and in_flight >= sweep.max_concurrent_runs:
        # The common case of a metric logged by a child: no room, and no write lock taken to find out.
        return False
    try:
        with transaction.atomic():
            # Counted and made under the sweep's row lock (SQLite: the write lock), so two processes
            # never both see room for one more child.
            Sweep.objects.select_for_update().filter(pk=sweep.pk).first()
            made = SweepChild.objects.filter(sweep=sweep).count()
            if made >= sweep.max_total_runs:
                Sweep.objects.filter(pk=sweep.pk, end_reason="").update(end_reason=TOTAL_REACHED.format(count=made))
                sweep.refresh_from_db(fields=["end_reason"])
                return False
            in_flight = Run.objects.filter(parent=sweep.parent_id, status__in=ACTIVE_STATUSES).count()
            if in_flight >= sweep.max_concurrent_runs:
                return False
            history = ended_history(sweep) if sweep.sampling["type"] == "bayesian" else []
            values = sampling.parameters_for(sweep.sampling, made, history, maximize=sweep.maximize)
            arguments = list(sweep.parent.arguments)
            for name in sweep.sampling["order"]:
                arguments += [sampling.argument_name(name), str(values[name])]
            tags = {name.lstrip("-"): str(value) for name, value in values.items()}
            run = run_services.run_submit_child(
                parent=sweep.parent, arguments=arguments, tags=tags, display_name=f"child {made}"
            )
            # The (sweep, index) constraint: a child is made once, whatever else races to make it.
            SweepChild.objects.create(sweep=sweep, index=made, run=run, parameters=values)
    except IntegrityError:
        return True
    return True


def _end_when_done(sweep: Sweep) -> None:
    sweep.refresh_from_db(fields=["end_reason"])
    if not sweep.end_reason:
        return
    statuses = list(Run.objects.filter(parent=sweep.parent_id).values_list("status", flat=True))
    if any(status not in FINAL_STATUSES for status in statuses):
        return
    parent_pk = sweep.parent_id
    if sweep.end_reason == CANCELED:
        run_services.run_transition(parent_pk, RunStatus.CANCELED, reason=CANCELED)
    elif statuses and all(status == RunStatus.FAILED for status in statuses):
        run_services.fail_run(parent_pk, EVERY_CHILD_FAILED)
    else:
        run_services.run_transition(parent_pk, RunStatus.FINALIZING)
        run_services.run_transition(parent_pk, RunStatus.COMPLETED, reason=sweep.end_reason)
