"""The cloud SDK's `azureml.train.hyperdrive`: hyperparameter sweeps run by the server.

Under the porting rule, `from azureml.train.hyperdrive import ...` becomes
`from trainhub.sdk.train.hyperdrive import ...` (its submodules too: `.runconfig`, `.sampling`,
`.policy`, `.parameter_expressions`, `.run`).
"""

from __future__ import annotations

from trainhub.sdk.train.hyperdrive.parameter_expressions import (
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from trainhub.sdk.train.hyperdrive.policy import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from trainhub.sdk.train.hyperdrive.run import HyperDriveRun
from trainhub.sdk.train.hyperdrive.runconfig import HyperDriveConfig, PrimaryMetricGoal
from trainhub.sdk.train.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    RandomParameterSampling,
)

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "HyperParameterSampling",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "TruncationSelectionPolicy",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]
