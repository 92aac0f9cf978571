"""The inputs a parity check feeds every backend: real samples and the awkward cases.

- real samples of the model's dataset (validation split), letterboxed as the runtime does;
- an empty scene (uniform pad grey), all-0 and all-255 frames;
- a crowded scene: a mosaic of many samples, more candidates than ``max_det`` for detectors;
- a mixed batch (real, empty, crowded, ...) whose images have different detection counts;
- for graphs with a dynamic size, real samples at a second size (catches shapes baked in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedet.runtime.letterbox import letterbox
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["ParityInput", "parity_inputs"]


@dataclass(frozen=True)
class ParityInput:
    """One batch of frames: uint8 ``[B, H, W, 3]`` BGR at the graph's input size."""

    name: str
    images: np.ndarray


def _bgr(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def _samples(meta: GraphMetadata, count: int, size: tuple[int, int], offset: int = 0) -> list[np.ndarray]:
    from edgedet.data import build_dataset
    from edgedet.models.registry import get_entry

    dataset = build_dataset(get_entry(meta.model).spec.parity_data, split="val")
    pad = meta.letterbox.pad_value
    return [letterbox(_bgr(dataset[offset + i]["image"]), size, pad_value=pad)[0] for i in range(count)]


def _mosaic(tiles: list[np.ndarray], size: tuple[int, int], grid: int) -> np.ndarray:
    h, w = size
    th, tw = h // grid, w // grid
    out = np.full((h, w, 3), 114, dtype=np.uint8)
    for k, tile in enumerate(tiles[: grid * grid]):
        r, c = divmod(k, grid)
        out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = letterbox(tile, (th, tw))[0]
    return out


def parity_inputs(meta: GraphMetadata, samples: int = 4, batch: int = 4) -> list[ParityInput]:
    """Every input case for a graph described by ``meta`` (its edgedet metadata)."""
    size = meta.input.size
    real = _samples(meta, samples, size)
    cases = [ParityInput(f"real {i}-{min(i + batch, samples) - 1}", np.stack(real[i:i + batch]))
             for i in range(0, samples, batch)]
    empty = np.full((*size, 3), 114, dtype=np.uint8)
    cases.append(ParityInput("empty scene", empty[None]))
    cases.append(ParityInput("all 0", np.zeros((1, *size, 3), np.uint8)))
    cases.append(ParityInput("all 255", np.full((1, *size, 3), 255, np.uint8)))
    if meta.task == "detection":
        crowded = _mosaic(_samples(meta, 16, size, offset=samples), size, 4)
        cases.append(ParityInput("crowded mosaic", crowded[None]))
        mixed = [real[0], empty, crowded, real[-1]][:max(batch, 2)]
        cases.append(ParityInput("mixed batch", np.stack(mixed)))
    if meta.input.dynamic_size:
        step = meta.input.size_multiple or 32
        second = (size[0] + 2 * step, size[1] + step)
        cases.append(ParityInput(f"second size {second[0]}x{second[1]}",
                                 np.stack(_samples(meta, min(samples, batch), second))))
    return cases
