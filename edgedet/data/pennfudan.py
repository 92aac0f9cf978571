"""The Penn-Fudan pedestrian set (170 street photos, one class, instance masks).

Layout: ``PATH/PNGImages/<stem>.png`` with ``PATH/PedMasks/<stem>_mask.png``, whose pixel
values are instance ids (0 background). Samples carry instance masks, their tight boxes, label
0 ('person') and a semantic mask (1 person). :func:`download_pennfudan` fetches and checks the
official archive.
"""

from __future__ import annotations

import os
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgedet.data.disk import list_images, read_image, read_instance_ids, require_dir, split_every
from edgedet.data.sample import SampleDataset, check_split, tight_boxes
from edgedet.errors import DataError
from edgedet.runtime.files import atomic_path, file_digest

__all__ = ["PennFudan", "download_pennfudan", "PENNFUDAN_URL", "PENNFUDAN_MD5"]

PENNFUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
# The archive's md5 as published with ContinualAI's avalanche loader
# (avalanche/benchmarks/datasets/penn_fudan/penn_fudan_data.py); no sha256 is published.
PENNFUDAN_MD5 = "5aaa3dee905cef73325923716e38fc6d"


class PennFudan(SampleDataset):
    """Penn-Fudan pedestrians from ``root``; every ``val_every``-th image (sorted) is 'val'."""

    name = "pennfudan"
    class_names = ("person",)
    task = "segmentation"
    has_masks = True
    image_size = None

    def __init__(self, root: str | os.PathLike, split: str = "train", val_every: int = 10) -> None:
        self.split = check_split(split)
        self.root = Path(root).expanduser()
        require_dir(self.root, "Penn-Fudan dataset")
        images_dir = require_dir(self.root / "PNGImages", "Penn-Fudan PNGImages")
        masks_dir = require_dir(self.root / "PedMasks", "Penn-Fudan PedMasks")
        images = list_images(images_dir)
        if not images:
            raise DataError(f"no images in {images_dir}")
        pairs = []
        for image in images:
            mask = masks_dir / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DataError(f"image {image} has no mask: expected {mask}")
            pairs.append((image, mask))
        self.files = split_every(pairs, self.split, val_every)

    def __len__(self) -> int:
        return len(self.files)

    def _sample(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.files[index]
        image = read_image(image_path)
        ids = read_instance_ids(mask_path)
        if ids.shape != image.shape[:2]:
            raise DataError(f"mask {mask_path} is {ids.shape[1]}x{ids.shape[0]} but image "
                            f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        instances = np.unique(ids)
        instances = instances[instances != 0]
        masks = (ids[None] == instances[:, None, None]).astype(np.uint8)
        semantic = (ids != 0).astype(np.uint8)  # person is object class 0 -> semantic value 1
        return {"image": image, "boxes": tight_boxes(masks), "labels": np.zeros(len(masks), np.int64),
                "masks": masks, "semantic": semantic, "id": image_path.stem}


def download_pennfudan(root: str | os.PathLike, sha256: str | None = None,
                       url: str = PENNFUDAN_URL) -> Path:
    """Download and unpack Penn-Fudan into ``root``; returns ``root/PennFudanPed``.

    The archive is checked against its published md5 (:data:`PENNFUDAN_MD5`) and, when given,
    against ``sha256`` as well; a mismatch deletes it and raises :class:`DataError`, so nothing
    unverified is unpacked. An existing ``root/PennFudanPed`` is returned as is. Nothing in
    edgedet calls this on its own.
    """
    root = Path(root).expanduser()
    target = root / "PennFudanPed"
    if (target / "PNGImages").is_dir() and (target / "PedMasks").is_dir():
        return target
    archive = root / "PennFudanPed.zip"
    if not archive.is_file():
        with atomic_path(archive) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        f.write(chunk)
            except OSError as exc:
                raise DataError(f"cannot download {url}: {exc}") from exc
    checks = [("md5", PENNFUDAN_MD5)] + ([("sha256", sha256.lower())] if sha256 else [])
    for algorithm, expected in checks:
        actual = file_digest(archive, algorithm)
        if actual != expected:
            archive.unlink()
            raise DataError(f"{archive} failed its {algorithm} check (got {actual}, expected {expected}); "
                            "deleted it")
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            # Refuse members that would land outside root ("../x" or absolute names).
            if not (root / member).resolve().is_relative_to(root.resolve()):
                raise DataError(f"{archive} holds an unsafe path {member!r}")
        zf.extractall(root)
    archive.unlink()
    return target
