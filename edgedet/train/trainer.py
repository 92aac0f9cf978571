"""The training loop behind ``edgedet train``.

:func:`train` takes :class:`TrainOptions` and writes into ``options.out``:

- ``last.pt``: the full state after every epoch (and on Ctrl-C or, through the CLI, SIGTERM,
  mid-epoch): model, optimizer, LR scheduler, AMP scaler, RNG, epoch and batch position, history.
  ``--resume`` continues from it exactly where the run stopped: same batches, same augmentation,
  same random numbers.
- ``best.pt``: the model of the epoch with the best validation fitness (the family spec's
  ``fitness``), without optimizer state.
- ``results.csv`` and ``results.png``: losses and validation metrics per epoch.

Every file is written atomically. Everything in a checkpoint's ``train`` dict is a tensor or plain
data, so ``torch.load(weights_only=True)`` reads it.

The model's classes, input channels and input size come from the dataset (``--imgsz`` overrides
the size). The family's spec gives the loss, the targets, the default learning rate, the evaluator
and what to fit to the data before training from scratch (YOLOv3's anchors).

Multi-GPU: run under ``torchrun --nproc_per_node N -m edgedet train ...``. torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) switches on DistributedDataParallel with a
DistributedSampler; ``--batch`` is the total over all processes; rank 0 validates, logs and writes
checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from edgedet.train.checkpoint import load_checkpoint
from edgedet.train.loop import TrainingRun, model_overrides_for
from edgedet.train.options import TrainingError, TrainOptions, TrainResult

__all__ = ["TrainOptions", "TrainResult", "TrainingError", "train", "model_overrides_for", "resolve_device"]


# --------------------------------------------------------------------------- devices and processes


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` (None: CUDA when available) as a torch device, checked."""
    name = (device or ("cuda" if torch.cuda.is_available() else "cpu")).strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        index = local_rank if name == "cuda" else name.partition(":")[2]
        try:
            index = int(index)
        except ValueError:
            raise TrainingError(f"--device {name}: expected cuda:N with N a number") from None
        if not 0 <= index < torch.cuda.device_count():
            raise TrainingError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise TrainingError(f"unknown --device {device!r}; expected cpu, cuda or cuda:N")


def _setup_distributed(device: str | None) -> tuple[_Dist, torch.device]:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return _Dist(), resolve_device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return _Dist(rank, world, local_rank, True), dev


# --------------------------------------------------------------------------- starting and resuming


def _start(options: TrainOptions, resume: bool, exist_ok: bool) -> tuple[TrainOptions, dict[str, Any] | None]:
    from edgedet.runtime.files import check_writable_dir

    out = Path(options.out)
    last = out / "last.pt"
    if not resume:
        if last.exists() and not exist_ok:
            raise TrainingError(f"{out} already holds a run (last.pt); continue it with --resume, or choose "
                                f"another --out (or pass --exist-ok to start over there)")
        check_writable_dir(out)  # an unwritable --out fails now, not after the first epoch
        return options, None
    if not last.is_file():
        raise TrainingError(f"--resume: {last} does not exist; nothing to resume in {out}")
    check_writable_dir(out)
    ckpt = load_checkpoint(last)
    state = ckpt.get("train", {})
    if "options" not in state or "optimizer" not in state:
        raise TrainingError(f"--resume: {last} holds no training state to resume from")
    stored = TrainOptions.from_dict(state["options"])
    if options.model and options.model != stored.model:
        raise TrainingError(f"--resume: {last} is a {stored.model} run, not {options.model}")
    if options.data and options.data != stored.data:
        raise TrainingError(f"--resume: {last} was trained on {stored.data!r}, not {options.data!r}")
    epochs = options.epochs or stored.epochs
    if state.get("finished") and epochs <= state["epoch"]:
        raise TrainingError(f"--resume: the run in {out} already finished {state['epoch']} epochs "
                            f"({state.get('stopped', 'finished')}); pass a larger --epochs to train on")
    merged = dataclasses.replace(stored, epochs=epochs, out=str(out), device=options.device or stored.device,
                                 workers=options.workers if options.workers is not None else stored.workers)
    return merged, ckpt


def train(options: TrainOptions, *, resume: bool = False, exist_ok: bool = False,
          say: Callable[[str], None] = print, progress: bool = True,
          on_batch_end: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train ``options.model`` on ``options.data``; see the module docstring for what is written.

    Args:
        options: the run's settings. With ``resume``, the stored settings of ``out/last.pt`` are
            used; ``epochs`` may raise the total, ``device`` and ``workers`` may change.
        resume: continue the run in ``options.out``.
        exist_ok: start a new run even if ``options.out`` holds one.
        say: where progress lines go (rank 0 only).
        progress: show tqdm bars (when the output is a terminal).
        on_batch_end: called with ``(epoch, batch)`` (0-based) after every optimizer step.

    Returns:
        TrainResult. Ctrl-C returns early with ``stopped="interrupted"`` after writing last.pt.

    Raises:
        TrainingError, DataError, ModelError, CheckpointError: user mistakes and a diverged loss.
    """
    started = time.perf_counter()
    options, ckpt = _start(options, resume, exist_ok)
    options.check()
    info, device = _setup_distributed(options.device)
    main = info.main
    log = say if main else (lambda _m: None)
    try:
        return TrainingRun(options, ckpt, info, device, log, progress and main, on_batch_end).run(started)
    finally:
        if info.enabled and dist.is_initialized():
            try:
                dist.barrier()  # no process tears the group down while another still talks
            finally:
                dist.destroy_process_group()


