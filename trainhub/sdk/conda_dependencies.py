"""Where the guide's `from azureml.core.conda_dependencies import CondaDependencies` lands."""

from trainhub.sdk.environment import CondaDependencies

__all__ = ["CondaDependencies"]
