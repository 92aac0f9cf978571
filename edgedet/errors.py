"""Errors a user can cause. The CLI turns each into one ``error:`` line and exit code 1."""


class EdgedetError(Exception):
    """Base class for every mistake a user can make (bad input, missing file, wrong option)."""


class ModelError(EdgedetError):
    """Unknown model name or a configuration the model cannot be built with."""


class DataError(EdgedetError):
    """A dataset spec that cannot be parsed, or a file in a dataset that is missing or invalid."""


class CheckpointError(EdgedetError):
    """A checkpoint that cannot be read, is not an edgedet checkpoint, or would run code."""


class WeightsError(EdgedetError):
    """A darknet ``.weights`` file that does not fit the network, or cannot be obtained."""


class MissingDependencyError(EdgedetError):
    """An optional dependency (torch for training/export) is not installed."""
