"""Training transforms: letterboxing with targets, the graphs' preprocessing, per-family targets."""

import dataclasses

import numpy as np
import torch

from edgedet.data.transforms import TrainingSet, collate, fit_sample, hflip_sample, image_to_tensor
from edgedet.export.deploy import Preprocess
from edgedet.models import get_entry
from edgedet.ops.grid import decode_grid_targets


def _sample(h=40, w=80, channels=3):
    image = np.zeros((h, w, channels), np.uint8)
    image[10:20, 20:40] = 200
    semantic = np.zeros((h, w), np.uint8)
    semantic[10:20, 20:40] = 3
    return {"image": image, "boxes": np.array([[20, 10, 40, 20]], np.float32), "labels": np.array([2]),
            "semantic": semantic}


def test_letterbox_moves_boxes_and_pads_masks_with_ignore():
    s = fit_sample(_sample(), (64, 64), 3, with_semantic=True)
    # scale 64/80 = 0.8, new size 32x64, padded 16 rows above and below
    np.testing.assert_allclose(s.boxes, [[16, 24, 32, 32]])
    assert s.image.shape == (64, 64, 3) and (s.image[0] == 114).all()
    assert (s.semantic[:16] == 255).all() and (s.semantic[48:] == 255).all()
    assert (s.semantic[24:32, 16:32] == 3).all() and s.semantic[30, 40] == 0
    flipped = hflip_sample(s)
    np.testing.assert_allclose(flipped.boxes, [[32, 24, 48, 32]])
    assert (flipped.semantic[24:32, 32:48] == 3).all()


def test_channel_conversion_and_preprocessing_match_the_deploy_graph():
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (1, 6, 5, 3), dtype=np.uint8)
    expected = Preprocess(3)(torch.from_numpy(colour))[0]
    torch.testing.assert_close(image_to_tensor(colour[0]), expected, rtol=0, atol=1e-7)
    grey = fit_sample({"image": colour[0], "boxes": np.zeros((0, 4)), "labels": np.zeros(0)}, (6, 5), 1).image
    torch.testing.assert_close(image_to_tensor(grey), Preprocess(1)(torch.from_numpy(colour))[0], rtol=0, atol=1 / 255)


def test_collate_targets_per_family():
    samples = [fit_sample(_sample(), (40, 80), 3, i, with_semantic=True) for i in range(2)]
    empty = fit_sample({"image": np.zeros((40, 80, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
                        "labels": np.zeros(0, np.int64), "semantic": np.zeros((40, 80), np.uint8)}, (40, 80), 3, 2,
                       with_semantic=True)
    batch = [*samples, empty]

    def encoder(name, **config):  # the family's target encoder for a (40, 80) input
        entry = get_entry(name)
        return entry.spec.target_encoder(dataclasses.replace(entry.config, input_size=(40, 80), **config))

    loc = collate(batch, encoder("localizer"))
    assert loc["images"].shape == (3, 3, 40, 80) and loc["images"].dtype == torch.float32
    torch.testing.assert_close(loc["targets"][0], torch.tensor([1.0, 30 / 80, 15 / 40, 20 / 80, 10 / 40, 2]))
    assert loc["targets"][2].tolist() == [0, 0, 0, 0, 0, -1]
    grid = collate(batch, encoder("grid", grid=(2, 4)))
    boxes, labels = decode_grid_targets(grid["targets"][0], (40, 80))
    torch.testing.assert_close(boxes, torch.tensor([[20.0, 10, 40, 20]]))
    yolo = collate(batch, encoder("yolov3-tiny"))
    assert yolo["targets"].tolist() == [[0, 2, 20, 10, 40, 20], [1, 2, 20, 10, 40, 20]]
    seg = collate(batch, encoder("unet"))
    assert seg["targets"].dtype == torch.int64 and seg["targets"][0, 15, 30] == 3
    frames = collate(batch, encoder("unet"), frames=True)["images"]
    assert frames.dtype == torch.uint8 and frames.shape == (3, 40, 80, 3)


def test_fresh_epochs_read_their_own_stretch_of_the_stream():
    class Counting:
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {"image": np.full((4, 4, 1), i, np.uint8), "boxes": np.zeros((0, 4)), "labels": np.zeros(0)}

    ts = TrainingSet(Counting(), (4, 4), 1, epoch_length=10)
    assert len(ts) == 10 and ts[3].image[0, 0, 0] == 3
    ts.epoch = 2
    assert ts[3].image[0, 0, 0] == 23 and ts[3].index == 23
