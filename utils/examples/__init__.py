"""The course's data, made in code (nothing is downloaded)."""

from .running import RunningExample, running_example

__all__ = ["RunningExample", "running_example"]
