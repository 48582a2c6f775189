"""`lithops.wait`'s names: `from stratus.lithops.wait import ALL_COMPLETED`."""

from . import ALL_COMPLETED, ALWAYS, ANY_COMPLETED

__all__ = ["ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED"]
