"""Training: checkpoints now; losses, metrics and the training loop arrive with the training issue."""

from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "model_from_checkpoint"]
