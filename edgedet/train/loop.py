"""The training run: a small run state and the named steps of one ``edgedet train`` run.

:class:`TrainingRun` holds what a run is made of (data, model, loss, optimiser, schedule) and does
one thing per method: :meth:`~TrainingRun.prepare_data`, :meth:`~TrainingRun.build_model`,
:meth:`~TrainingRun.build_optimisation`, :meth:`~TrainingRun.restore_or_start`, then per epoch
:meth:`~TrainingRun.train_epoch` (:meth:`~TrainingRun.step` per batch) and
:meth:`~TrainingRun.end_epoch` (validate, log, checkpoint). :class:`RunState` is everything that
changes while the run goes on; it is stored in ``last.pt`` and restored by ``--resume``, so a
resumed run sees the same batches, augmentation and random numbers.

The family's spec supplies the family's part: target encoding, loss, default learning rate,
evaluator and fitness, and what to fit to the data before a model is built from scratch.
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

import torch
import torch.distributed as dist
from torch import nn

from edgedet.data.sample import FirstSamples
from edgedet.data.spec import DatasetSpec, build_dataset, parse_spec
from edgedet.data.synthetic import Clutter, DigitsGrid, DigitsLocalization
from edgedet.data.transforms import Collate, TrainingSet, sample_channels
from edgedet.errors import CheckpointError, DataError, ModelError
from edgedet.models.registry import create_model, get_entry, resolve_config
from edgedet.models.weights import init_from, resolve_weights
from edgedet.runtime.files import atomic_path
from edgedet.train.checkpoint import model_from_checkpoint, save_checkpoint
from edgedet.train.options import TrainingError, TrainOptions, TrainResult
from edgedet.train.plots import plot_history
from edgedet.train.validate import check_data_fits, class_names_for, evaluate

__all__ = ["RunState", "TrainingRun", "model_overrides_for"]

_SYNTHETIC = (DigitsLocalization, DigitsGrid, Clutter)
_HEADLINE = ("accuracy", "mean_iou", "map50", "map50_95", "mask_map50", "mask_map50_95")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def model_overrides_for(name: str, dataset, imgsz: tuple[int, int] | None = None,
                        model_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides that fit model ``name`` to ``dataset``: classes, channels, input size.

    Detectors and localizers take the dataset's classes; segmenters ``background`` plus them.
    The input size is ``imgsz``, else the dataset's fixed image size (rounded up to the family's size
    multiple: 32 for YOLOv3, ``2 ** depth`` for U-Net), else the model's default. ``model_config``
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
        fields = {f.name for f in dataclasses.fields(entry.config)}  # unknown keys fail in resolve_config
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in (model_config or {}).items() if k in fields}
        multiple = entry.spec.size_multiple(dataclasses.replace(entry.config, **known))
        overrides["input_size"] = (_round_up(h, multiple), _round_up(w, multiple))
    overrides.update(model_config or {})
    return overrides


@dataclass
class RunState:
    """What changes while a run goes on; stored in ``last.pt`` under the same keys.

    Attributes:
        epoch: epochs completed.
        batch: batches completed in the current epoch (non-zero after an interrupt).
        global_step: optimizer steps taken.
        best_fitness, best_epoch: the best validation so far (1-based epoch).
        bad_epochs: epochs since the best one.
        history: one row per epoch (losses, learning rate, validation metrics, seconds).
        metrics: the last validation's metrics.
        partial: loss sums of the current epoch so far (``{"sums": {...}, "count": n}``).
    """

    epoch: int = 0
    batch: int = 0
    global_step: int = 0
    best_fitness: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    partial: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> "RunState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def best_metrics(self) -> dict[str, float]:
        if self.best_epoch is None:
            return {}
        return {k[4:]: v for k, v in self.history[self.best_epoch - 1].items() if k.startswith("val/")}


class TrainingRun:
    """One training run; :meth:`run` does it all (see the module docstring for the steps).

    Args:
        options: the run's settings (already merged with the stored ones when resuming).
        ckpt: the ``last.pt`` to resume from, or None for a new run.
        dist_info: the process's place under torchrun (``rank``, ``world``, ``enabled``, ``main``).
        device: where to train.
        log: where progress lines go (a no-op on ranks other than 0).
        progress: show tqdm bars.
        on_batch_end: called with ``(epoch, batch)`` (0-based) after every optimizer step.
    """

    def __init__(self, options: TrainOptions, ckpt: dict[str, Any] | None, dist_info, device: torch.device,
                 log: Callable[[str], None], progress: bool,
                 on_batch_end: Callable[[int, int], None] | None = None) -> None:
        self.options, self.ckpt, self.info, self.device = options, ckpt, dist_info, device
        self.log, self.progress, self.on_batch_end = log, progress, on_batch_end
        self.out = Path(options.out)
        self.entry = get_entry(options.model)
        self.state = RunState()

    # ------------------------------------------------------------------ setting up

    def prepare_data(self) -> None:
        """Training and validation sets fitted to the model input, cached when that pays."""
        options = self.options
        train_data = build_dataset(options.data, "train")
        val_data = build_dataset(options.data, "val")
        if options.val_images is not None:
            val_data = FirstSamples(val_data, options.val_images)
        synthetic = isinstance(train_data, _SYNTHETIC)
        cache = synthetic if options.cache is None else options.cache
        fresh = synthetic if options.fresh is None else options.fresh
        if fresh and not synthetic:
            raise TrainingError(f"--fresh needs a synthetic dataset; {train_data.name!r} has a fixed set of images")
        epoch_length = len(train_data)
        if fresh:  # epoch e reads samples e*n .. (e+1)*n-1 of the same deterministic stream
            spec = parse_spec(options.data)
            train_data = build_dataset(
                DatasetSpec(spec.name, spec.path, {**spec.options, "n": epoch_length * options.epochs}), "train")
        flip = 0.0 if synthetic else 0.5  # mirrored digits are other shapes; people and cars are not

        if self.ckpt is not None:
            check_data_fits(options.model, train_data)
            names = tuple(self.ckpt["class_names"])
            expected = class_names_for(options.model, train_data)
            if names != expected:
                raise CheckpointError(f"{self.out / 'last.pt'} has classes {names} but the data has {expected}")
            self.model = model_from_checkpoint(self.ckpt)
            cfg = self.model.cfg
        else:
            self.overrides = model_overrides_for(options.model, train_data, options.imgsz, options.model_config)
            try:
                cfg = resolve_config(options.model, **self.overrides)
            except ModelError as e:
                raise ModelError(f"{options.model} on {options.data}: {e}") from None
        self.size, self.channels = tuple(cfg.input_size), cfg.in_channels
        if self.channels not in (1, 3):
            raise ModelError(f"{options.model}: in_channels must be 1 or 3 to take images, got {self.channels}")
        semantic, masks = self.entry.task == "segmentation", self.entry.spec.instance_masks
        self.train_set = TrainingSet(train_data, self.size, self.channels, with_semantic=semantic, flip=flip,
                                     seed=options.seed, cache=cache and not fresh,
                                     epoch_length=epoch_length if fresh else None, with_masks=masks)
        self.val_set = TrainingSet(val_data, self.size, self.channels, with_semantic=semantic, cache=cache,
                                   with_masks=masks)
        if len(self.val_set) == 0:
            raise DataError(f"dataset {options.data!r} has no validation images")
        if cache:
            self._fill_cache()
        self.workers = options.workers if options.workers is not None else \
            (0 if self.train_set.cache is not None else min(8, max(1, (os.cpu_count() or 2) - 1)))

    def build_model(self) -> None:
        """A new model (fitted to the data by its spec, seeded, optionally initialised from
        ``--weights``); a resumed run already has its model from ``last.pt``."""
        options = self.options
        if self.ckpt is None:
            overrides = self.overrides
            if options.weights is None:
                overrides = self.entry.spec.fit_to_data(options.model, overrides, self.train_set, seed=options.seed,
                                                        log=self.log)
            torch.manual_seed(options.seed)
            self.model = create_model(options.model, **overrides)
            if options.weights:
                source = resolve_weights(options.model, options.weights)
                count = init_from(self.model, source)
                self.log(f"initialised {count}/{len(self.model.state_dict())} tensors from {source.path}")
        self.cfg = self.model.cfg
        self.encode = self.entry.spec.target_encoder(self.cfg)

    def build_optimisation(self) -> None:
        """Loss, AdamW, the distributed sampler, warmup + cosine schedule and the AMP scaler."""
        options, device, info = self.options, self.device, self.info
        self.amp = (device.type == "cuda") if options.amp is None else (options.amp and device.type == "cuda")
        if options.amp and device.type != "cuda":
            self.log("note: --amp needs CUDA; training in float32 on the CPU")
        # channels-last is faster on CUDA (tensor cores) and on CPUs too (oneDNN): 1.4-1.6x per step
        # for every family on a 2-core EPYC.
        self.model = self.model.to(device, memory_format=torch.channels_last)
        spec = self.entry.spec
        self.loss_fn = spec.loss(self.model, box_loss=options.box_loss, class_weights=options.class_weights).to(device)
        self.lr = options.lr or spec.lr
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, options.weight_decay), lr=self.lr)
        self.per_rank_batch = max(1, options.batch // info.world)
        self.sampler = torch.utils.data.distributed.DistributedSampler(
            self.train_set, num_replicas=info.world, rank=info.rank, shuffle=True, seed=options.seed, drop_last=False)
        self.drop_last = len(self.sampler) > self.per_rank_batch
        steps_per_epoch = len(self.sampler) // self.per_rank_batch if self.drop_last else 1
        total_steps = steps_per_epoch * options.epochs
        warmup = min(int(options.warmup_epochs * steps_per_epoch), total_steps // 3)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_cosine(total_steps, warmup))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)

    def restore_or_start(self) -> None:
        """Resume: optimiser, schedule, scaler, run state and random numbers from ``last.pt``.
        New run: seed, and clear the run directory of an earlier run's files."""
        if self.ckpt is not None:
            t = self.ckpt["train"]
            self.optimizer.load_state_dict(t["optimizer"])
            self.scheduler.load_state_dict(t["scheduler"])
            if t.get("scaler"):
                self.scaler.load_state_dict(t["scaler"])
            self.state = RunState.from_dict(t)
            _set_rng_state(t["rng"], self.device)
            self.log(f"resuming {self.options.model} on {self.options.data} at epoch {self.state.epoch + 1}"
                     + (f", batch {self.state.batch}" if self.state.batch else "") + f" of {self.options.epochs}")
        else:
            torch.manual_seed(self.options.seed + self.info.rank)
            if self.info.main:
                self.out.mkdir(parents=True, exist_ok=True)
                for stale in ("last.pt", "best.pt", "results.csv", "results.png"):
                    (self.out / stale).unlink(missing_ok=True)
        self.raw_model = self.model
        if self.info.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ------------------------------------------------------------------ epochs

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], int]:
        """One pass over the training set (from ``state.batch`` on when resuming mid-epoch);
        returns the summed loss parts and the batch count."""
        from tqdm import tqdm

        options, state = self.options, self.state
        self.model.train()
        self.sampler.set_epoch(epoch)
        self.train_set.epoch = epoch
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=self.per_rank_batch,
            sampler=_SkipSampler(self.sampler, state.batch * self.per_rank_batch),
            num_workers=self.workers, collate_fn=Collate(self.encode), drop_last=self.drop_last,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(options.seed + epoch),
            persistent_workers=False)
        sums: dict[str, float] = dict(state.partial.get("sums", {}))
        count = int(state.partial.get("count", 0))
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{options.epochs}", leave=False, dynamic_ncols=True,
                   disable=None if self.progress else True, initial=state.batch, total=state.batch + len(loader))
        for batch in bar:
            loss, parts = self.step(batch, epoch)
            state.batch += 1
            state.global_step += 1
            count += 1
            sums["loss"] = sums.get("loss", 0.0) + loss
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            state.partial = {"sums": sums, "count": count}
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
            if self.on_batch_end is not None:
                self.on_batch_end(epoch, state.batch - 1)
        bar.close()
        return sums, count

    def step(self, batch: dict[str, Any], epoch: int) -> tuple[float, dict[str, float]]:
        """One optimizer step; a non-finite loss (on any process) ends the run."""
        device, info = self.device, self.info
        images = batch["images"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = batch["targets"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
            heads = self.model(images)
        loss, parts = self.loss_fn(heads, targets)
        finite = torch.isfinite(loss.detach())
        if info.enabled:  # every process stops together
            flag = finite.float().to(device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag > 0
        if not bool(finite):
            raise TrainingError(
                f"the loss became {float(loss.detach()):g} in epoch {epoch + 1}, batch {self.state.batch + 1}: "
                f"training diverged; lower --lr (now {self.lr:g}) or check the data"
                + (f"; {self.out / 'last.pt'} holds the state after epoch {epoch}" if epoch else ""))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.options.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # With AMP the scaler skips the optimizer step of a batch whose gradients overflowed
            # (the first few, while it finds its scale); torch then warns that the schedule
            # stepped first. The schedule counts batches, so that is intended.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            self.scheduler.step()
        return float(loss.detach()), {k: float(v) for k, v in parts.items()}

    def end_epoch(self, epoch: int, sums: dict[str, float], count: int, started: float) -> bool:
        """Validate (rank 0), log, write best.pt / last.pt / results; returns whether to stop early."""
        options, state = self.options, self.state
        row: dict[str, float] = {"epoch": epoch + 1}
        row.update({f"train/{k}": v / max(count, 1) for k, v in sums.items()})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        stop = False
        if self.info.main:
            result = evaluate(self.raw_model, self.val_set, batch=self.per_rank_batch, device=self.device,
                              progress=self.progress, desc=f"val {epoch + 1}/{options.epochs}")
            self.raw_model.train()
            row.update({f"val/{k}": v for k, v in result.metrics.items()})
            row["seconds"] = time.perf_counter() - started
            fitness = result.fitness
            improved = state.best_fitness is None or fitness > state.best_fitness
            state.epoch, state.batch, state.partial = epoch + 1, 0, {}
            state.metrics = dict(result.metrics)
            state.history = state.history + [row]
            if improved:
                state.best_fitness, state.best_epoch, state.bad_epochs = fitness, epoch + 1, 0
                save_checkpoint(self.out / "best.pt", self.raw_model, train={
                    "epoch": epoch + 1, "metrics": dict(result.metrics), "options": options.to_dict(),
                    "data": options.data, "history": state.history})
            else:
                state.bad_epochs += 1
            stop = bool(options.patience) and state.bad_epochs >= options.patience
            finished = stop or epoch + 1 >= options.epochs
            self.save_last(finished, ("early-stop" if stop else "finished") if finished else "")
            _write_csv(self.out / "results.csv", state.history)
            try:
                plot_history(state.history, self.out / "results.png", state.best_epoch,
                             f"{options.model} on {options.data}")
            except Exception as e:  # a plot must never end a run
                self.log(f"note: could not draw results.png: {e}")
            losses = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("train/"))
            self.log(f"epoch {epoch + 1}/{options.epochs}  {losses.replace('train/', '')}  "
                     f"{_format_metrics(result.metrics)}  fitness {fitness:.4f}  "
                     f"{row['seconds']:.1f}s{'  *best' if improved else ''}")
        else:
            state.epoch, state.batch, state.partial = epoch + 1, 0, {}
        if self.info.enabled:
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item() > 0)
        return stop

    def save_last(self, finished: bool = False, stopped: str = "") -> None:
        """``last.pt``: the model and everything a resume needs (rank 0 only)."""
        if not self.info.main:
            return
        train = {**self.state.to_dict(), "options": self.options.to_dict(), "data": self.options.data,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.amp else {}, "rng": _rng_state(self.device),
                 "finished": finished, "stopped": stopped}
        save_checkpoint(self.out / "last.pt", self.raw_model, train=train)

    # ------------------------------------------------------------------ the whole run

    def run(self, started: float) -> TrainResult:
        self.prepare_data()
        self.build_model()
        self.build_optimisation()
        self.restore_or_start()
        options, state, info = self.options, self.state, self.info
        self.log(f"training {options.model} ({sum(p.numel() for p in self.raw_model.parameters()) / 1e6:.2f}M "
                 f"params, input {self.channels}x{self.size[0]}x{self.size[1]}, {self.cfg.num_classes} classes) on "
                 f"{options.data}: {len(self.train_set)} train / {len(self.val_set)} val images, {options.epochs} "
                 f"epochs, batch {options.batch}{f' over {info.world} processes' if info.world > 1 else ''}, "
                 f"lr {self.lr:g}, {self.device}{', amp' if self.amp else ''} -> {self.out}")
        stopped = "finished"
        epoch = state.epoch
        try:
            while epoch < options.epochs:
                epoch_start = time.perf_counter()
                sums, count = self.train_epoch(epoch)
                stop = self.end_epoch(epoch, sums, count, epoch_start)
                epoch += 1
                if stop:
                    stopped = "early-stop"
                    self.log(f"early stop: no better validation fitness for {options.patience} epochs")
                    break
        except KeyboardInterrupt:
            stopped = "interrupted"
            self.save_last()
            self.log(f"interrupted in epoch {epoch + 1}, batch {state.batch}: {self.out / 'last.pt'} written; "
                     f"continue with: edgedet train --resume --out {self.out}")
        best_metrics = state.best_metrics()
        seconds = time.perf_counter() - started
        if stopped != "interrupted":
            self.log(f"done in {seconds / 60:.1f} min: best epoch {state.best_epoch} "
                     f"({_format_metrics(best_metrics)}) -> {self.out / 'best.pt'}")
        return TrainResult(self.out, state.epoch, state.best_epoch, best_metrics, dict(state.metrics), stopped,
                           seconds, list(state.history), info.rank)

    def _fill_cache(self) -> None:
        from tqdm import tqdm

        missing = [(s, i) for s in (self.train_set, self.val_set) if s.cache is not None
                   for i in range(len(s)) if i not in s.cache]
        if not missing:
            return
        t = time.perf_counter()
        for s, i in tqdm(missing, desc="caching samples", leave=False, disable=None if self.progress else True):
            s.fitted(i)
        self.log(f"cached {len(missing)} samples in memory ({time.perf_counter() - t:.1f}s)")


# --------------------------------------------------------------------------- helpers


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


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in _HEADLINE if k in metrics)
