"""Fine-tune the localizer as the fully convolutional network it is deployed as, on digits-scene.

``edgedet export --fully-conv`` evaluates the localizer on every 48x60 window of a frame at once;
with the localizer's zero-padded 3x3 convolutions a window of that dense map is not the localizer
on the cropped window (see ``benchmarks/results/fully_conv.md``), so training on crops is not
training what runs. This script trains the localizer's own weights through the dense forward
(the head applied as convolutions, the way :func:`edgedet.models.localizer.fully_convolutional`
converts it) on whole ``digits-scene`` training canvases. Every window gets the localizer's
target: the largest digit lying wholly inside it, box relative to the window, or "no digit" (a
digit cut by the window's border counts as none). The loss is the localizer's own
(:class:`edgedet.train.losses.LocalizerLoss`) over all windows. BatchNorm keeps the shipped
statistics (eval mode), so a 48x60 input still sees the network it was trained as.

The result is an ordinary localizer checkpoint (not shipped): evaluate it with
``python benchmarks/fully_conv.py --weights OUT.pt --append --label "..."``.

Usage: OMP_NUM_THREADS=1 python benchmarks/fully_conv_finetune.py --out runs/fc_dense.pt [--steps 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgedet import samples
from edgedet.data import build_dataset
from edgedet.models.weights import build_model, resolve_weights
from edgedet.train.checkpoint import save_checkpoint
from edgedet.train.losses import LocalizerLoss


def dense_heads(model, x: Tensor) -> Tensor:
    """The localizer's head on every window: ``[B, 5 + C, gh, gw]``, sharing the model's weights."""
    first, second = model.head[1], model.head[4]
    feats = model.features(x)
    fh, fw = model.features(x[..., :model.cfg.input_size[0], :model.cfg.input_size[1]]).shape[2:]
    hidden = F.conv2d(feats, first.weight.view(first.out_features, -1, fh, fw), first.bias)
    hidden = F.leaky_relu(hidden, model.cfg.leaky)
    return F.conv2d(hidden, second.weight.view(second.out_features, -1, 1, 1), second.bias)


def window_targets(boxes: np.ndarray, labels: np.ndarray, grid: tuple[int, int], window: tuple[int, int],
                   stride: int) -> Tensor:
    """``[gh * gw, 6]`` localizer targets (present, cx, cy, w, h as window fractions, label) per window."""
    gh, gw = grid
    wh, ww = window
    target = torch.zeros(gh, gw, 6)
    target[..., 5] = -1
    if len(boxes) == 0:
        return target.reshape(-1, 6)
    b = torch.from_numpy(boxes)
    oy = (torch.arange(gh) * stride).view(gh, 1, 1).float()
    ox = (torch.arange(gw) * stride).view(1, gw, 1).float()
    inside = (b[:, 0] >= ox) & (b[:, 1] >= oy) & (b[:, 2] <= ox + ww) & (b[:, 3] <= oy + wh)  # (gh, gw, K)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    best = torch.where(inside, area, torch.full_like(area, -1.0)).argmax(-1)  # (gh, gw)
    present = inside.any(-1)
    sel = b[best]  # (gh, gw, 4)
    cx = ((sel[..., 0] + sel[..., 2]) / 2 - ox[..., 0]) / ww
    cy = ((sel[..., 1] + sel[..., 3]) / 2 - oy[..., 0]) / wh
    w, h = (sel[..., 2] - sel[..., 0]) / ww, (sel[..., 3] - sel[..., 1]) / wh
    rows = torch.stack((torch.ones_like(cx), cx, cy, w, h, torch.from_numpy(labels)[best].float()), -1)
    target[present] = rows[present]
    return target.reshape(-1, 6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=samples.checkpoint("localizer"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="digits-scene:glyphs=builtin,size=120x160,max_digits=4,min_digits=1")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("localizer", resolve_weights("localizer", str(args.weights)))
    model.eval()  # BatchNorm keeps its statistics; there is no dropout in the shipped config
    dataset = build_dataset(args.data, split="train")
    window, stride = tuple(model.cfg.input_size), 8
    loss_fn = LocalizerLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    start, index = time.time(), 0
    for step in range(args.steps):
        batch = [dataset[(index + k) % len(dataset)] for k in range(args.batch)]
        index += args.batch
        x = torch.from_numpy(np.stack([s["image"] for s in batch])).permute(0, 3, 1, 2).float() / 255
        heads = dense_heads(model, x)  # (B, 15, gh, gw)
        gh, gw = heads.shape[2:]
        targets = torch.cat([window_targets(s["boxes"], s["labels"], (gh, gw), window, stride) for s in batch])
        loss, parts = loss_fn(heads.permute(0, 2, 3, 1).reshape(-1, heads.shape[1]), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} " + " ".join(f"{k} {v.item():.4f}" for k, v in parts.items())
                  + f" present {int((targets[:, 0] > 0).sum())}/{len(targets)} {time.time() - start:.0f}s", flush=True)
    save_checkpoint(args.out, model, train={"fine_tuned_from": str(args.weights.name), "data": args.data,
                                            "steps": args.steps, "batch": args.batch, "lr": args.lr,
                                            "recipe": "benchmarks/fully_conv_finetune.py"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
