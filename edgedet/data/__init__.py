"""Datasets: synthetic digit sets, Penn-Fudan, YOLO and COCO layouts, and previews of them.

Every dataset follows the sample contract of :mod:`edgedet.data.sample` (numpy samples, BGR
images, tight end-exclusive boxes, semantic masks with 0 background, k + 1 for class k and 255
ignore). :func:`build_dataset` turns a spec string (grammar in :mod:`edgedet.data.spec`) into a
dataset.
"""

from edgedet.data.coco import CocoDataset
from edgedet.data.glyphs import GlyphBank, download_mnist, load_mnist, mnist_available, mnist_root
from edgedet.data.pennfudan import PennFudan, download_pennfudan
from edgedet.data.preview import preview_dataset, render_preview
from edgedet.data.sample import (IGNORE, SPLITS, TASKS, SampleDataset, segmentation_class_names,
                                 semantic_from_instances, tight_boxes)
from edgedet.data.spec import DatasetSpec, build_dataset, describe_datasets, list_datasets, parse_spec
from edgedet.data.synthetic import Clutter, DigitsGrid, DigitsLocalization
from edgedet.data.yolo import YoloDataset

__all__ = [
    "build_dataset", "parse_spec", "list_datasets", "describe_datasets", "DatasetSpec",
    "render_preview", "preview_dataset",
    "SampleDataset", "DigitsLocalization", "DigitsGrid", "Clutter", "PennFudan", "YoloDataset",
    "CocoDataset",
    "GlyphBank", "load_mnist", "mnist_root", "mnist_available", "download_mnist", "download_pennfudan",
    "tight_boxes", "semantic_from_instances", "segmentation_class_names", "IGNORE", "SPLITS", "TASKS",
]
