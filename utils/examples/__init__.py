"""The course's data, made in code (nothing is downloaded)."""

from .heads import HeadsExample, heads_example
from .running import RunningExample, running_example
from .translation import TranslationBatch, TranslationExample, translation_batch, translation_example

__all__ = [
    "HeadsExample",
    "RunningExample",
    "TranslationBatch",
    "TranslationExample",
    "heads_example",
    "running_example",
    "translation_batch",
    "translation_example",
]
