"""Early termination policies: which children a sweep stops while they run."""

from __future__ import annotations

from typing import Any

from trainhub.sdk.exceptions import UserErrorException

ONE_SLACK = "BanditPolicy needs either slack_factor or slack_amount, but not both."
BAD_SLACK = "BanditPolicy's {what} must be a positive number, not {value!r}."
BAD_INTERVAL = "evaluation_interval must be an integer of at least 1, not {value!r}."
BAD_DELAY = "delay_evaluation must be an integer of at least 0, not {value!r}."
BAD_TRUNCATION = "truncation_percentage must be an integer between 1 and 99, not {value!r}."


def _integer(value: Any, low: int, message: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserErrorException(message.format(value=value))
    return value


class EarlyTerminationPolicy:
    policy_type = ""

    def __init__(self, evaluation_interval: int = 1, delay_evaluation: int = 0):
        self.evaluation_interval = _integer(evaluation_interval, 1, BAD_INTERVAL)
        self.delay_evaluation = _integer(delay_evaluation, 0, BAD_DELAY)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.policy_type,
            "evaluation_interval": self.evaluation_interval,
            "delay_evaluation": self.delay_evaluation,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_json()!r})"


class BanditPolicy(EarlyTerminationPolicy):
    """Stops a child whose primary metric at an evaluation interval is not within the slack of
    the best child's at the same interval (slack_factor: a ratio; slack_amount: a difference)."""

    policy_type = "BanditPolicy"

    def __init__(
        self,
        evaluation_interval: int = 1,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        delay_evaluation: int = 0,
    ):
        super().__init__(evaluation_interval, delay_evaluation)
        if (slack_factor is None) == (slack_amount is None):
            raise UserErrorException(ONE_SLACK)
        for what, value in (("slack_factor", slack_factor), ("slack_amount", slack_amount)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise UserErrorException(BAD_SLACK.format(what=what, value=value))
        self.slack_factor = slack_factor
        self.slack_amount = slack_amount

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"slack_factor": self.slack_factor, "slack_amount": self.slack_amount}


class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Stops a child whose best primary metric so far is worse than the median of the running
    averages of the other children at the same interval."""

    policy_type = "MedianStoppingPolicy"


class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """At each evaluation interval, stops the running children among the lowest
    truncation_percentage percent of all children by their primary metric at that interval."""

    policy_type = "TruncationSelectionPolicy"

    def __init__(
        self,
        truncation_percentage: int,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        exclude_finished_jobs: bool = False,
    ):
        super().__init__(evaluation_interval, delay_evaluation)
        if (
            isinstance(truncation_percentage, bool)
            or not isinstance(truncation_percentage, int)
            or not (1 <= truncation_percentage <= 99)
        ):
            raise UserErrorException(BAD_TRUNCATION.format(value=truncation_percentage))
        self.truncation_percentage = truncation_percentage
        self.exclude_finished_jobs = bool(exclude_finished_jobs)

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {
            "truncation_percentage": self.truncation_percentage,
            "exclude_finished_jobs": self.exclude_finished_jobs,
        }


class NoTerminationPolicy(EarlyTerminationPolicy):
    """Every child runs to its end."""

    policy_type = "NoTerminationPolicy"

    def __init__(self) -> None:
        super().__init__(1, 0)
