"""The guide imports ComputeTargetException from here."""

from trainhub.sdk.exceptions import ComputeTargetException

__all__ = ["ComputeTargetException"]
