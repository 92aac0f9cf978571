"""The training loop behind ``edgedet train``.

:func:`train` takes :class:`TrainOptions` and writes into ``options.out``:

- ``last.pt``: the full state after every epoch (and on Ctrl-C, mid-epoch): model, optimizer,
  LR scheduler, AMP scaler, RNG, epoch and batch position, history. ``--resume`` continues from it
  exactly where the run stopped: same batches, same augmentation, same random numbers.
- ``best.pt``: the model of the epoch with the best validation fitness
  (:func:`edgedet.train.validate.fitness_of`), without optimizer state.
- ``results.csv`` and ``results.png``: losses and validation metrics per epoch.

Every file is written atomically. Everything in a checkpoint's ``train`` dict is a tensor or plain
data, so ``torch.load(weights_only=True)`` reads it.

The model's classes, input channels and input size come from the dataset (``--imgsz`` overrides
the size); YOLOv3 trained from scratch gets anchors clustered on the training boxes.

Multi-GPU: run under ``torchrun --nproc_per_node N -m edgedet train ...``. torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) switches on DistributedDataParallel with a
DistributedSampler; ``--batch`` is the total over all processes; rank 0 validates, logs and writes
checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgedet.data.spec import DatasetSpec, build_dataset, parse_spec
from edgedet.data.synthetic import Clutter, DigitsGrid, DigitsLocalization
from edgedet.data.transforms import TrainingSet, collate, sample_channels
from edgedet.errors import CheckpointError, DataError, EdgedetError, ModelError
from edgedet.models.registry import create_model, get_entry, resolve_config
from edgedet.runtime.files import atomic_path
from edgedet.train.anchors import kmeans_anchors
from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgedet.train.losses import BOX_LOSSES, build_loss
from edgedet.train.plots import plot_history
from edgedet.train.validate import ValResult, check_data_fits, class_names_for, evaluate

__all__ = ["TrainOptions", "TrainResult", "TrainingError", "train", "model_overrides_for", "DEFAULT_LR",
           "resolve_device"]

# AdamW learning rates that train each family well from scratch at batch 64.
DEFAULT_LR = {"localizer": 2e-3, "grid": 2e-3, "yolov3": 2e-3, "unet": 3e-3}
_SYNTHETIC = (DigitsLocalization, DigitsGrid, Clutter)
_ANCHOR_SAMPLES = 2000


class TrainingError(EdgedetError):
    """Training cannot go on: diverged loss, an unusable run directory, options that contradict."""


@dataclass(frozen=True)
class TrainOptions:
    """What ``edgedet train`` takes; every field is plain data (it is stored in checkpoints).

    Attributes:
        model: registered model name.
        data: dataset spec (see :mod:`edgedet.data.spec`).
        epochs: epochs to train.
        batch: images per optimizer step, summed over all processes.
        imgsz: network input ``(H, W)``; None: the dataset's image size (rounded up to what the
            model accepts), else the model's default.
        lr: peak AdamW learning rate; None: :data:`DEFAULT_LR` of the family.
        weight_decay: AdamW weight decay of convolution and linear weights.
        warmup_epochs: linear warmup from 1 % of ``lr``, then a cosine decay to 1 % at the end.
        device: ``cpu``, ``cuda``, ``cuda:N``; None: CUDA when available.
        workers: DataLoader worker processes; None: 0 when training samples are cached (collating
            cached samples is cheaper than starting workers), else up to 8 (one fewer than cores).
        out: run directory.
        weights: initial weights: an edgedet checkpoint or darknet weights (yolov3 family); tensors
            whose shape fits are copied (so a head with another class count starts fresh).
        patience: stop after this many epochs without a better validation fitness (0: never).
        amp: mixed precision; None: on for CUDA. CPU always trains in float32.
        seed: seeds weights, batch order and augmentation.
        box_loss: YOLOv3's box loss, ``xywh`` or ``giou``.
        class_weights: per-class cross-entropy weights for segmenters (background first).
        cache: keep decoded samples in memory; None: for the synthetic sets (their training
            samples only when not ``fresh``).
        fresh: draw new training samples every epoch (synthetic sets generate any number:
            epoch e reads samples ``e * n .. (e + 1) * n - 1`` of their deterministic stream, so a
            resumed run sees the same ones); None: on for synthetic sets. Validation stays fixed.
        model_config: config overrides (``{"width": 0.25}``) applied after the dataset's.
        grad_clip: gradient norm clip (0: off).
    """

    model: str
    data: str
    epochs: int = 30
    batch: int = 64
    imgsz: tuple[int, int] | None = None
    lr: float | None = None
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    device: str | None = None
    workers: int | None = None
    out: str = "runs/train"
    weights: str | None = None
    patience: int = 10
    amp: bool | None = None
    seed: int = 0
    box_loss: str = "xywh"
    class_weights: tuple[float, ...] | None = None
    cache: bool | None = None
    fresh: bool | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    grad_clip: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("imgsz", "class_weights"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def check(self) -> None:
        if self.epochs < 1:
            raise TrainingError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch < 1:
            raise TrainingError(f"--batch must be >= 1, got {self.batch}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"--lr must be a positive number, got {self.lr}")
        if self.box_loss not in BOX_LOSSES:
            raise TrainingError(f"box loss must be one of {', '.join(BOX_LOSSES)}, got {self.box_loss!r}")
        if self.patience < 0 or (self.workers or 0) < 0:
            raise TrainingError("--patience and --workers must be >= 0")
        if self.weights and not self.weights.startswith("darknet:") and not Path(self.weights).is_file():
            raise TrainingError(f"--weights {self.weights} does not exist")


@dataclass
class TrainResult:
    """Where a run ended: its directory, best epoch and metrics, and why it stopped."""

    out: Path
    epochs_run: int
    best_epoch: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    stopped: str  # "finished", "early-stop", "interrupted"
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0  # the process's rank under torchrun; only rank 0 writes files

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    @property
    def last(self) -> Path:
        return self.out / "last.pt"


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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- model from data


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def model_overrides_for(name: str, dataset, imgsz: tuple[int, int] | None = None,
                        model_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides that fit model ``name`` to ``dataset``: classes, channels, input size.

    Detectors and localizers take the dataset's classes; segmenters ``background`` plus them.
    The input size is ``imgsz``, else the dataset's fixed image size (rounded up to a multiple of
    32 for YOLOv3, of ``2 ** depth`` for U-Net), else the model's default. ``model_config``
    overrides are applied last.
    """
    check_data_fits(name, dataset)
    entry = get_entry(name)
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name!r} ({dataset.split}) holds no images")
    names = class_names_for(name, dataset)
    overrides: dict[str, Any] = {"num_classes": len(names), "class_names": names,
                                 "in_channels": sample_channels(dataset[0])}
    if imgsz is not None:
        overrides["input_size"] = tuple(imgsz)
    elif dataset.image_size is not None:
        h, w = dataset.image_size
        if entry.family == "yolov3":
            h, w = _round_up(h, 32), _round_up(w, 32)
        elif entry.family == "unet":
            stride = 2 ** int((model_config or {}).get("depth", entry.config.depth))
            h, w = _round_up(h, stride), _round_up(w, stride)
        overrides["input_size"] = (h, w)
    overrides.update(model_config or {})
    return overrides


def _init_from(model: nn.Module, weights: str, say: Callable[[str], None]) -> None:
    """Copy every tensor of ``weights`` whose name and shape fit ``model``."""
    path = Path(weights)
    if weights.startswith("darknet:") or weights.endswith(".weights"):
        from edgedet.models.darknet import load_darknet_weights, resolve_darknet_weights

        if get_entry(model.model_name).family != "yolov3":
            raise TrainingError(f"darknet weights fit yolov3 and yolov3-tiny, not {model.model_name}")
        path = resolve_darknet_weights(weights) if weights.startswith("darknet:") else path
        if not path.is_file():
            raise TrainingError(f"darknet weights {path} do not exist")
        cfg = dataclasses.asdict(model.cfg)
        cfg.update(num_classes=80, class_names=())
        source = create_model(model.model_name, **cfg)
        load_darknet_weights(source, path)
        state = source.state_dict()
    else:
        ckpt = load_checkpoint(path)
        state = ckpt["state_dict"]
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise TrainingError(f"no tensor of {path} fits {model.model_name}; is it a checkpoint of this model?")
    model.load_state_dict(fit, strict=False)
    say(f"initialised {len(fit)}/{len(own)} tensors from {path}")


def _fit_anchors(model_name: str, overrides: dict[str, Any], train_set: TrainingSet, seed: int) -> tuple:
    cfg = resolve_config(model_name, **overrides)
    n = min(len(train_set), _ANCHOR_SAMPLES)
    wh = []
    for i in np.linspace(0, len(train_set) - 1, n).astype(int):
        b = train_set.fitted(int(i)).boxes
        wh.append(b[:, 2:] - b[:, :2])
    wh = np.concatenate(wh) if wh else np.zeros((0, 2))
    if len(wh) < len(cfg.anchors):
        return cfg.anchors
    return tuple((round(float(w), 1), round(float(h), 1)) for w, h in kmeans_anchors(wh, len(cfg.anchors), seed))


# --------------------------------------------------------------------------- batches


class _Collate:
    def __init__(self, family: str, input_size: tuple[int, int], grid: tuple[int, int] | None) -> None:
        self.family, self.input_size, self.grid = family, input_size, grid

    def __call__(self, samples):
        return collate(samples, self.family, self.input_size, self.grid)


class _SkipSampler(torch.utils.data.Sampler):
    """A DistributedSampler's order for one epoch, without its first ``skip`` indices (resume)."""

    def __init__(self, sampler: torch.utils.data.distributed.DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _warmup_cosine(total_steps: int, warmup_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return floor + (1.0 - floor) * step / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return factor


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)  # no decay on BatchNorm and biases
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- logs


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _format_metrics(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


_HEADLINE = ("accuracy", "mean_iou", "map50", "map50_95")


# --------------------------------------------------------------------------- the loop


def _start(options: TrainOptions, resume: bool, exist_ok: bool) -> tuple[TrainOptions, dict[str, Any] | None]:
    out = Path(options.out)
    last = out / "last.pt"
    if not resume:
        if last.exists() and not exist_ok:
            raise TrainingError(f"{out} already holds a run (last.pt); continue it with --resume, or choose "
                                f"another --out (or pass --exist-ok to start over there)")
        return options, None
    if not last.is_file():
        raise TrainingError(f"--resume: {last} does not exist; nothing to resume in {out}")
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
        return _run(options, ckpt, info, device, log, progress and main, on_batch_end, started)
    finally:
        if info.enabled and dist.is_initialized():
            try:
                dist.barrier()  # no process tears the group down while another still talks
            finally:
                dist.destroy_process_group()


def _run(options: TrainOptions, ckpt: dict[str, Any] | None, info: _Dist, device: torch.device,
         log: Callable[[str], None], progress: bool, on_batch_end, started: float) -> TrainResult:
    from tqdm import tqdm

    out = Path(options.out)
    family = get_entry(options.model).family
    train_data = build_dataset(options.data, "train")
    val_data = build_dataset(options.data, "val")
    synthetic = isinstance(train_data, _SYNTHETIC)
    cache = synthetic if options.cache is None else options.cache
    fresh = synthetic if options.fresh is None else options.fresh
    if fresh and not synthetic:
        raise TrainingError(f"--fresh needs a synthetic dataset; {train_data.name!r} has a fixed set of images")
    epoch_length = len(train_data)
    if fresh:  # epoch e reads samples e*n .. (e+1)*n-1 of the same deterministic stream
        spec = parse_spec(options.data)
        train_data = build_dataset(DatasetSpec(spec.name, spec.path, {**spec.options, "n": epoch_length * options.epochs}),
                                   "train")
    flip = 0.0 if synthetic else 0.5  # mirrored digits are other shapes; people and cars are not

    # ---- model config, data, model
    if ckpt is not None:
        check_data_fits(options.model, train_data)
        names = tuple(ckpt["class_names"])
        expected = class_names_for(options.model, train_data)
        if names != expected:
            raise CheckpointError(f"{out / 'last.pt'} has classes {names} but the data has {expected}")
        model = model_from_checkpoint(ckpt)
        cfg = model.cfg
    else:
        overrides = model_overrides_for(options.model, train_data, options.imgsz, options.model_config)
        try:
            cfg = resolve_config(options.model, **overrides)
        except ModelError as e:
            raise ModelError(f"{options.model} on {options.data}: {e}") from None
    size = tuple(cfg.input_size)
    channels = cfg.in_channels
    if channels not in (1, 3):
        raise ModelError(f"{options.model}: in_channels must be 1 or 3 to take images, got {channels}")
    train_set = TrainingSet(train_data, size, channels, with_semantic=family == "unet", flip=flip,
                            seed=options.seed, cache=cache and not fresh, epoch_length=epoch_length if fresh else None)
    val_set = TrainingSet(val_data, size, channels, with_semantic=family == "unet", cache=cache)
    if len(val_set) == 0:
        raise DataError(f"dataset {options.data!r} has no validation images")
    if cache:
        _fill_cache(train_set, val_set, progress, log)
    workers = options.workers if options.workers is not None else \
        (0 if train_set.cache is not None else min(8, max(1, (os.cpu_count() or 2) - 1)))
    if ckpt is None:
        if family == "yolov3" and options.weights is None and "anchors" not in options.model_config:
            overrides["anchors"] = _fit_anchors(options.model, overrides, train_set, options.seed)
            log(f"anchors fitted to the training boxes: {' '.join(f'{w:g}x{h:g}' for w, h in overrides['anchors'])}")
        torch.manual_seed(options.seed)
        model = create_model(options.model, **overrides)
        cfg = model.cfg
        if options.weights:
            _init_from(model, options.weights, log)

    # ---- optimisation
    amp = (device.type == "cuda") if options.amp is None else (options.amp and device.type == "cuda")
    if options.amp and device.type != "cuda":
        log("note: --amp needs CUDA; training in float32 on the CPU")
    # channels-last is faster on CUDA (tensor cores) and on CPUs too (oneDNN): 1.4-1.6x per step
    # for every family on a 2-core EPYC.
    model = model.to(device, memory_format=torch.channels_last)
    loss_fn = build_loss(family, model, options.box_loss, options.class_weights).to(device)
    lr = options.lr or DEFAULT_LR[family]
    optimizer = torch.optim.AdamW(_param_groups(model, options.weight_decay), lr=lr)
    per_rank_batch = max(1, options.batch // info.world)
    sampler = torch.utils.data.distributed.DistributedSampler(
        train_set, num_replicas=info.world, rank=info.rank, shuffle=True, seed=options.seed, drop_last=False)
    drop_last = len(sampler) > per_rank_batch
    steps_per_epoch = len(sampler) // per_rank_batch if drop_last else 1
    total_steps = steps_per_epoch * options.epochs
    warmup = min(int(options.warmup_epochs * steps_per_epoch), total_steps // 3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    # ---- state
    state: dict[str, Any] = {"epoch": 0, "batch": 0, "global_step": 0, "best_fitness": None, "best_epoch": None,
                             "bad_epochs": 0, "history": [], "metrics": {}, "partial": {}}
    if ckpt is not None:
        t = ckpt["train"]
        optimizer.load_state_dict(t["optimizer"])
        scheduler.load_state_dict(t["scheduler"])
        if t.get("scaler"):
            scaler.load_state_dict(t["scaler"])
        for key in state:
            if key in t:
                state[key] = t[key]
        _set_rng_state(t["rng"], device)
        log(f"resuming {options.model} on {options.data} at epoch {state['epoch'] + 1}"
            + (f", batch {state['batch']}" if state["batch"] else "") + f" of {options.epochs}")
    else:
        torch.manual_seed(options.seed + info.rank)
        if info.main:
            out.mkdir(parents=True, exist_ok=True)
            for stale in ("last.pt", "best.pt", "results.csv", "results.png"):
                (out / stale).unlink(missing_ok=True)

    raw_model = model
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def train_state(finished: bool = False, stopped: str = "") -> dict[str, Any]:
        return {**state, "options": options.to_dict(), "data": options.data, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if amp else {},
                "rng": _rng_state(device), "finished": finished, "stopped": stopped}

    def save_last(finished: bool = False, stopped: str = "") -> None:
        if info.main:
            save_checkpoint(out / "last.pt", raw_model, train=train_state(finished, stopped))

    log(f"training {options.model} ({sum(p.numel() for p in raw_model.parameters()) / 1e6:.2f}M params, "
        f"input {channels}x{size[0]}x{size[1]}, {cfg.num_classes} classes) on {options.data}: "
        f"{len(train_set)} train / {len(val_set)} val images, {options.epochs} epochs, batch {options.batch}"
        f"{f' over {info.world} processes' if info.world > 1 else ''}, lr {lr:g}, {device}"
        f"{', amp' if amp else ''} -> {out}")

    stopped = "finished"
    epoch = state["epoch"]
    try:
        while epoch < options.epochs:
            epoch_start = time.perf_counter()
            model.train()
            sampler.set_epoch(epoch)
            train_set.epoch = epoch
            skip = state["batch"] * per_rank_batch
            loader = torch.utils.data.DataLoader(
                train_set, batch_size=per_rank_batch, sampler=_SkipSampler(sampler, skip),
                num_workers=workers, collate_fn=_Collate(family, size, getattr(cfg, "grid", None)),
                drop_last=drop_last, pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(options.seed + epoch),
                persistent_workers=False)
            sums: dict[str, float] = dict(state["partial"].get("sums", {}))
            count = int(state["partial"].get("count", 0))
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{options.epochs}", leave=False, dynamic_ncols=True,
                       disable=None if progress else True, initial=state["batch"],
                       total=state["batch"] + len(loader))
            for batch in bar:
                images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                targets = batch["targets"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    heads = model(images)
                loss, parts = loss_fn(heads, targets)
                finite = torch.isfinite(loss.detach())
                if info.enabled:  # every process stops together
                    flag = finite.float().to(device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                    finite = flag > 0
                if not bool(finite):
                    raise TrainingError(
                        f"the loss became {float(loss.detach()):g} in epoch {epoch + 1}, batch {state['batch'] + 1}: "
                        f"training diverged; lower --lr (now {lr:g}) or check the data"
                        + (f"; {out / 'last.pt'} holds the state after epoch {epoch}" if epoch else ""))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if options.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                with warnings.catch_warnings():
                    # With AMP the scaler skips the optimizer step of a batch whose gradients
                    # overflowed (the first few, while it finds its scale); torch then warns that
                    # the schedule stepped first. The schedule counts batches, so that is intended.
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                    scheduler.step()
                state["batch"] += 1
                state["global_step"] += 1
                count += 1
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                state["partial"] = {"sums": sums, "count": count}
                bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
                if on_batch_end is not None:
                    on_batch_end(epoch, state["batch"] - 1)
            bar.close()

            # ---- validate (rank 0), log, checkpoint
            row: dict[str, float] = {"epoch": epoch + 1}
            row.update({f"train/{k}": v / max(count, 1) for k, v in sums.items()})
            row["lr"] = optimizer.param_groups[0]["lr"]
            stop = False
            if info.main:
                result: ValResult = evaluate(raw_model, val_set, batch=per_rank_batch, device=device,
                                             progress=progress, desc=f"val {epoch + 1}/{options.epochs}")
                raw_model.train()
                row.update({f"val/{k}": v for k, v in result.metrics.items()})
                row["seconds"] = time.perf_counter() - epoch_start
                fitness = result.fitness
                improved = state["best_fitness"] is None or fitness > state["best_fitness"]
                state["epoch"], state["batch"], state["partial"] = epoch + 1, 0, {}
                state["metrics"] = dict(result.metrics)
                state["history"] = state["history"] + [row]
                if improved:
                    state["best_fitness"], state["best_epoch"], state["bad_epochs"] = fitness, epoch + 1, 0
                    save_checkpoint(out / "best.pt", raw_model, train={
                        "epoch": epoch + 1, "metrics": dict(result.metrics), "options": options.to_dict(),
                        "data": options.data, "history": state["history"]})
                else:
                    state["bad_epochs"] += 1
                stop = bool(options.patience) and state["bad_epochs"] >= options.patience
                finished = stop or epoch + 1 >= options.epochs
                save_last(finished, ("early-stop" if stop else "finished") if finished else "")
                _write_csv(out / "results.csv", state["history"])
                try:
                    plot_history(state["history"], out / "results.png", state["best_epoch"],
                                 f"{options.model} on {options.data}")
                except Exception as e:  # a plot must never end a run
                    log(f"note: could not draw results.png: {e}")
                losses = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("train/"))
                log(f"epoch {epoch + 1}/{options.epochs}  {losses.replace('train/', '')}  "
                    f"{_format_metrics(result.metrics, _HEADLINE)}  fitness {fitness:.4f}  "
                    f"{row['seconds']:.1f}s{'  *best' if improved else ''}")
            else:
                state["epoch"], state["batch"], state["partial"] = epoch + 1, 0, {}
            if info.enabled:
                flag = torch.tensor([1.0 if stop else 0.0], device=device)
                dist.broadcast(flag, 0)
                stop = bool(flag.item() > 0)
            epoch += 1
            if stop:
                stopped = "early-stop"
                log(f"early stop: no better validation fitness for {options.patience} epochs")
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        save_last()
        log(f"interrupted in epoch {epoch + 1}, batch {state['batch']}: {out / 'last.pt'} written; "
            f"continue with: edgedet train --resume --out {out}")

    best_metrics: dict[str, float] = {}
    if state["best_epoch"] is not None:
        best_metrics = {k[4:]: v for k, v in state["history"][state["best_epoch"] - 1].items() if k.startswith("val/")}
    seconds = time.perf_counter() - started
    if stopped != "interrupted":
        log(f"done in {seconds / 60:.1f} min: best epoch {state['best_epoch']} "
            f"({_format_metrics(best_metrics, _HEADLINE)}) -> {out / 'best.pt'}")
    return TrainResult(out, state["epoch"], state["best_epoch"], best_metrics, dict(state["metrics"]), stopped,
                       seconds, list(state["history"]), info.rank)


def _fill_cache(train_set: TrainingSet, val_set: TrainingSet, progress: bool, log: Callable[[str], None]) -> None:
    from tqdm import tqdm

    missing = [(s, i) for s in (train_set, val_set) if s.cache is not None for i in range(len(s)) if i not in s.cache]
    if not missing:
        return
    t = time.perf_counter()
    for s, i in tqdm(missing, desc="caching samples", leave=False, disable=None if progress else True):
        s.fitted(i)
    log(f"cached {len(missing)} samples in memory ({time.perf_counter() - t:.1f}s)")
