"""Training curves: every drawn line tells itself apart, and the fitness never hides a metric."""

import csv

import pytest

from edgedet.samples import training_log
from edgedet.train.plots import plot_history, plotted_series


def _history(name):
    with open(training_log(name)) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_segmentation_curves_draw_the_headline_metrics_and_fold_fitness_into_mean_iou(tmp_path):
    history = _history("unet")  # logs 12 validation columns
    panels, labels = plotted_series(history)
    validation = dict(panels)["validation"]
    assert len(validation) <= 9  # fewer lines than the colours of the cycle
    assert labels["val/mean_iou"] == "mean_iou = fitness" and "val/fitness" not in validation
    assert "val/weighted_recall" not in validation  # stays in results.csv
    assert plot_history(history, tmp_path / "unet.png", best_epoch=30).stat().st_size > 0


@pytest.mark.parametrize("name", ["grid", "yolov3-tiny"])
def test_a_fitness_of_its_own_is_drawn_beside_the_metrics(name):
    panels, labels = plotted_series(_history(name))
    validation = dict(panels)["validation"]
    assert validation[-1] == "val/fitness" and labels["val/fitness"] == "fitness"
    assert {"val/map50", "val/map50_95"} <= set(validation)
