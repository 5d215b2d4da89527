"""Early termination: which running children a sweep's policy stops, from the primary metric each
child logged so far (its values in the order logged: value k is interval k). Pure."""

from __future__ import annotations

import math
import statistics
from typing import Any


def _reason(policy: dict[str, Any], interval: int) -> str:
    kind = policy["type"]
    if kind == "BanditPolicy":
        if policy.get("slack_factor") is not None:
            return f"early termination: BanditPolicy, slack {policy['slack_factor']:g} at interval {interval}"
        return f"early termination: BanditPolicy, slack amount {policy['slack_amount']:g} at interval {interval}"
    if kind == "TruncationSelectionPolicy":
        return (
            f"early termination: TruncationSelectionPolicy, {policy['truncation_percentage']}% at interval {interval}"
        )
    return f"early termination: {kind} at interval {interval}"


def evaluation_intervals(policy: dict[str, Any], reported: int) -> range:
    """The intervals at which the policy looks at a child that reported `reported` values."""
    every = policy.get("evaluation_interval") or 1
    first = max(policy.get("delay_evaluation", 0), 1)
    first = -(-first // every) * every  # the first multiple of `every` from there
    return range(first, reported + 1, every)


def to_stop(
    policy: dict[str, Any], *, maximize: bool, values: dict[int, list[float]], running: set[int]
) -> dict[int, str]:
    """{child index: reason} of the running children the policy stops now. `values` holds every
    child's values (ended children count as the field to compare against).

    A running child is looked at in every evaluation interval it reached, against the children
    that reached the same interval, whenever they reached it: the outcome depends on the values
    logged, not on which process noticed them first. Each interval's field is worked out once.
    """
    if policy.get("type") in (None, "NoTerminationPolicy"):
        return {}
    fields: dict[int, dict[int, float]] = {}

    def field(interval: int) -> dict[int, float]:
        if interval not in fields:
            fields[interval] = {
                other: series[interval - 1] for other, series in values.items() if len(series) >= interval
            }
        return fields[interval]

    stopped = {}
    for index in sorted(running):
        mine = values.get(index) or []
        for interval in evaluation_intervals(policy, len(mine)):
            if _stops(policy, maximize, index, interval, field(interval), values, running):
                stopped[index] = _reason(policy, interval)
                break
    return stopped


def _stops(
    policy: dict[str, Any],
    maximize: bool,
    index: int,
    interval: int,
    field: dict[int, float],
    values: dict[int, list[float]],
    running: set[int],
) -> bool:
    value = field[index]
    if policy["type"] == "BanditPolicy":
        return _outside_slack(policy, value, (max if maximize else min)(field.values()), maximize)
    if policy["type"] == "MedianStoppingPolicy":
        others = [statistics.fmean(values[other][:interval]) for other in field if other != index]
        if not others:
            return False
        median = statistics.median(others)
        best_so_far = (max if maximize else min)(values[index][:interval])
        return best_so_far < median if maximize else best_so_far > median
    if policy["type"] == "TruncationSelectionPolicy":
        if policy.get("exclude_finished_jobs"):
            field = {other: v for other, v in field.items() if other in running}
        cut = math.floor(len(field) * policy["truncation_percentage"] / 100)
        ranked = sorted(field, key=lambda other: field[other], reverse=maximize)
        return bool(cut) and index in ranked[len(ranked) - cut :]
    return False


def _outside_slack(policy: dict[str, Any], value: float, best: float, maximize: bool) -> bool:
    factor = policy.get("slack_factor")
    if factor is not None:
        limit = best / (1 + factor) if maximize else best * (1 + factor)
    else:  # a checked BanditPolicy carries exactly one of the two
        amount = policy["slack_amount"]
        limit = best - amount if maximize else best + amount
    return value < limit if maximize else value > limit
