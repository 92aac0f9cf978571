"""Training: options, the run loop, losses, evaluators and metrics, checkpoints.

Import the submodules (``edgedet.train.trainer``, ``edgedet.train.checkpoint``, ...); this package
imports nothing itself, so the CLI can read :mod:`edgedet.train.options` without torch.
"""
