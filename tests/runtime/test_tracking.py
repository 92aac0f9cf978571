"""The tracker on synthetic detections: ids through crossings, occlusions and weak detections."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgedet.errors import MissingDependencyError
from edgedet.runtime.draw import draw_detections, palette
from edgedet.runtime.results import Result
from edgedet.runtime.tracking import SourceTrackers, Tracker, TrackerConfig, TrackingError
from tests.conftest import assert_user_error, run_cli

SIZE = 28.0  # a digit-sized box


@dataclass
class Mover:
    """An object moving steadily from ``start`` at ``velocity`` px/frame, visible in ``frames``."""

    start: tuple[float, float]
    velocity: tuple[float, float]
    frames: range
    label: int = 0
    score: float = 0.9

    def box(self, frame: int) -> np.ndarray:
        cx = self.start[0] + self.velocity[0] * frame
        cy = self.start[1] + self.velocity[1] * frame
        return np.array([cx - SIZE / 2, cy - SIZE / 2, cx + SIZE / 2, cy + SIZE / 2])


def hide(box: np.ndarray, occluder: tuple[float, float]) -> np.ndarray | None:
    """What a detector sees of ``box`` behind a vertical band ``occluder`` (x0, x1): the visible
    part, clipped as the object slides in or out, or nothing once less than a third shows."""
    x0, x1 = occluder
    left = np.array([box[0], box[1], min(box[2], x0), box[3]])
    right = np.array([max(box[0], x1), box[1], box[2], box[3]])
    visible = left if left[2] - left[0] >= right[2] - right[0] else right
    if visible[2] - visible[0] < (box[2] - box[0]) / 3:
        return None
    return visible


def play(tracker: Tracker, movers: list[Mover], frames: int, occluder: tuple[float, float] | None = None,
         shuffle: int = 0) -> dict[int, list[int]]:
    """Feed the movers' detections frame by frame; returns each mover's id per visible frame."""
    rng = np.random.default_rng(shuffle)
    ids: dict[int, list[int]] = {i: [] for i in range(len(movers))}
    for f in range(frames):
        rows = []
        for i, mover in enumerate(movers):
            if f not in mover.frames:
                continue
            box = mover.box(f)
            if occluder is not None:
                box = hide(box, occluder)
            if box is not None:
                rows.append((i, box, mover.score, mover.label))
        order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))  # detections come in any order
        rows = [rows[k] for k in order]
        boxes = np.array([r[1] for r in rows]).reshape(-1, 4)
        got = tracker.update(boxes, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]), frame=f)
        for (i, *_), track_id in zip(rows, got.tolist()):
            ids[i].append(track_id)
    return ids


def test_crossing_objects_keep_their_ids():
    movers = [Mover((20, 100), (6, 0.5), range(60)), Mover((380, 112), (-6, -0.5), range(60))]
    ids = play(Tracker(), movers, 60, shuffle=1)
    assert set(ids[0]) == {1} and set(ids[1]) == {2}


@pytest.mark.parametrize("speed", [4.0, 7.0])
def test_an_object_passing_behind_an_occluder_keeps_its_id(speed):
    # The occluder hides the object fully for 6 frames (0.2 s at 30 FPS), and clips it while it
    # slides in and out, which throws the velocity off exactly when it matters.
    width = 6 * speed + SIZE
    occluder = (200.0, 200.0 + width)
    movers = [Mover((40, 100), (speed, 0.0), range(90)), Mover((40, 200), (speed * 0.5, 0.0), range(90))]
    ids = play(Tracker(), movers, 90, occluder=occluder)
    seen = len(ids[0])
    assert seen < 90 - 5  # it really was hidden
    assert set(ids[0]) == {1} and set(ids[1]) == {2}


def test_iou_alone_loses_the_occluded_object():
    """The lost-track stage is what keeps the id: without it, the same scene gives a new id."""
    speed = 7.0
    occluder = (200.0, 200.0 + 6 * speed + SIZE)
    iou_only = Tracker(TrackerConfig(lost_distance=0.0))
    ids = play(iou_only, [Mover((40, 100), (speed, 0.0), range(90))], 90, occluder=occluder)
    assert len(set(ids[0])) > 1


def test_objects_crossing_behind_an_occluder_keep_their_ids():
    # Two objects in neighbouring lanes pass behind the same occluder in opposite directions and
    # are hidden at the same time: each must come out with its own id, not the other's.
    speed = 4.0
    occluder = (200.0, 200.0 + 6 * speed + SIZE)
    movers = [Mover((40, 100), (speed, 0.0), range(120)), Mover((380, 134), (-speed, 0.0), range(120))]
    ids = play(Tracker(), movers, 120, occluder=occluder, shuffle=2)
    assert all(len(ids[i]) < 120 - 5 for i in (0, 1))  # both really were hidden
    assert set(ids[0]) == {1} and set(ids[1]) == {2}


def test_an_object_bouncing_while_seen_cut_is_looked_for_on_its_way_back():
    # It goes behind a bar, shows in part in the narrow gap between the bar and the frame's edge,
    # turns there, and comes back behind the bar: the track must follow the turn seen in part.
    bar = (150.0, 230.0)
    xs = [40.0 + 4 * f for f in range(54)]  # left edge: 40 .. 252, the right edge 250 + 28 reached
    xs = [x if x + SIZE <= 260 else 2 * (260 - SIZE) - x for x in xs]
    xs += [xs[-1] - 4 * (k + 1) for k in range(60)]
    tracker = Tracker()
    got = []
    for f, x in enumerate(xs):
        box = hide(np.array([x, 100 - SIZE / 2, x + SIZE, 100 + SIZE / 2]), bar)
        if box is not None:
            box[2] = min(box[2], 260.0)  # the frame's edge
            got.append(int(tracker.update(box[None], np.array([0.9]), np.array([0]), frame=f)[0]))
        else:
            tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), frame=f)
    assert got[-1] != -1 and set(got) == {1}


def test_a_much_bigger_object_near_a_lost_tracks_prediction_does_not_take_its_id():
    # While a small object is hidden, a new object three times its size shows up right where the
    # small one is predicted to be: it is another object (seen in part, an object looks smaller,
    # not bigger), and the small one keeps its id when it comes out.
    speed = 4.0
    occluder = (200.0, 200.0 + 6 * speed + SIZE)
    small = Mover((40, 100), (speed, 0.0), range(90))
    tracker = Tracker()
    small_ids, big_ids = [], []
    for f in range(90):
        rows = []
        seen = hide(small.box(f), occluder)
        if seen is not None:
            rows.append(("small", seen))
        if 50 <= f < 60:  # the small one is hidden now; the big one sits where it is predicted
            cx = 40 + speed * f
            rows.append(("big", np.array([cx - 1.5 * SIZE, 100 - 1.5 * SIZE, cx + 1.5 * SIZE, 100 + 1.5 * SIZE])))
        boxes = np.array([b for _, b in rows]).reshape(-1, 4)
        got = tracker.update(boxes, np.full(len(rows), 0.9), np.zeros(len(rows)), frame=f)
        for (who, _), track_id in zip(rows, got.tolist()):
            (small_ids if who == "small" else big_ids).append(track_id)
    assert set(small_ids) == {1}
    assert 1 not in big_ids and set(big_ids) - {-1} == {2}


def test_a_new_object_gets_a_new_id_once_confirmed():
    movers = [Mover((20, 50), (3, 0), range(30)), Mover((300, 200), (-3, 0), range(10, 30))]
    ids = play(Tracker(), movers, 30)
    assert set(ids[0]) == {1}
    # First seen in frame 10: tentative there (-1), id 2 from its second frame on.
    assert ids[1][0] == -1 and set(ids[1][1:]) == {2}


def test_every_object_of_the_first_frame_is_confirmed_at_once():
    tracker = Tracker()
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]], float)
    assert tracker.update(boxes, np.full(3, 0.9), np.zeros(3)).tolist() == [1, 2, 3]


def test_low_score_detections_keep_a_track_alive():
    tracker = Tracker(TrackerConfig(max_lost=2))
    mover = Mover((20, 100), (4, 0), range(40))
    got = []
    for f in range(40):
        score = 0.3 if 10 <= f < 25 else 0.9  # partly hidden: the detector is unsure for 15 frames
        got.append(int(tracker.update(mover.box(f)[None], np.array([score]), np.array([0]), frame=f)[0]))
    assert set(got) == {1}
    assert tracker.ids_issued == 1


def test_a_lone_low_score_detection_starts_no_track():
    tracker = Tracker()
    for f in range(5):
        assert tracker.update(np.array([[10.0 * f, 0, 10.0 * f + 20, 20]]), np.array([0.3]), np.array([0]),
                              frame=f).tolist() == [-1]
    assert tracker.ids_issued == 0 and tracker.tracks == 0


def test_detections_below_low_score_are_ignored():
    tracker = Tracker(TrackerConfig(max_lost=1))
    mover = Mover((20, 100), (4, 0), range(20))
    for f in range(20):
        score = 0.05 if 5 <= f < 15 else 0.9
        tracker.update(mover.box(f)[None], np.array([score]), np.array([0]), frame=f)
    assert tracker.ids_issued == 2  # the track died while only ignored detections came


def test_a_class_flicker_keeps_the_id_unless_tracks_are_strictly_per_class():
    # Detectors change their mind about a partly hidden object's class; the track's class is the
    # one its detections scored most for, and another class only costs more overlap.
    mover = Mover((20, 100), (4, 0), range(12))
    labels = [3, 3, 3, 3, 7, 3, 3, 7, 7, 3, 3, 3]
    for config, expected in ((TrackerConfig(), {1}), (TrackerConfig(class_penalty=float("inf")), {1, 2})):
        tracker = Tracker(config)
        got = [int(tracker.update(mover.box(f)[None], np.array([0.9]), np.array([labels[f]]), frame=f)[0])
               for f in range(12)]
        assert set(got) - {-1} == expected, got


def test_a_second_box_of_a_tracked_object_starts_no_track():
    # Per-class NMS can box one object twice (as two classes): the weaker box is not followed.
    tracker = Tracker()
    box = np.array([[10.0, 10, 40, 40], [11, 10, 41, 40]])
    for f in range(5):
        assert tracker.update(box + 3 * f, np.array([0.95, 0.7]), np.array([3, 7]), frame=f).tolist() == [1, -1]
    assert tracker.ids_issued == 1


def test_boxes_overlapping_like_nms_duplicates_make_one_track():
    # Per-class NMS leaves two boxes on one object where their classes differ, overlapping less
    # than a same-class pair would need to be suppressed (IoU 0.6 here): one track, not two
    # tracks taking turns.
    tracker = Tracker()
    first, second = [], []
    for f in range(20):
        box = np.array([[10.0, 10, 40, 40], [10, 10, 40, 50]]) + 3 * f  # IoU 0.75 ... 0.6 ...
        box[1, 3] = box[0, 3] + 20.0  # ... 0.6: the second box is taller
        scores = np.array([0.9, 0.8]) if f % 2 else np.array([0.8, 0.9])  # and they take turns leading
        got = tracker.update(box, scores, np.array([3, 7]), frame=f).tolist()
        first.append(got[0])
        second.append(got[1])
    assert tracker.ids_issued == 1
    assert all((a == 1) != (b == 1) and -1 in (a, b) for a, b in zip(first, second))


def test_two_boxes_of_an_object_coming_out_take_one_lost_track():
    # Two objects are hidden; the first comes out boxed twice (two classes). The second box must
    # not take the other hidden object's track: that one keeps its id when it comes out too.
    speed = 4.0
    occluder = (200.0, 200.0 + 6 * speed + SIZE)
    movers = [Mover((40, 100), (speed, 0.0), range(100)), Mover((20, 150), (speed, 0.0), range(100))]
    tracker = Tracker()
    ids: dict[int, list[int]] = {0: [], 1: [], 2: []}  # 2: the first one's second box
    for f in range(100):
        rows = []
        for i, mover in enumerate(movers):
            seen = hide(mover.box(f), occluder)
            if seen is not None:
                rows.append((i, seen, 0.9, 0))
                if i == 0 and seen[0] >= occluder[1]:  # coming out on the right
                    rows.append((2, seen + np.array([0, 0, 0, 18.0]), 0.8, 5))  # IoU 0.6
        got = tracker.update(np.array([r[1] for r in rows]).reshape(-1, 4), np.array([r[2] for r in rows]),
                             np.array([r[3] for r in rows]), frame=f)
        for (i, *_), track_id in zip(rows, got.tolist()):
            ids[i].append(track_id)
    assert set(ids[0]) == {1} and set(ids[1]) == {2}
    assert set(ids[2]) == {-1}


def test_a_track_lost_for_longer_than_max_lost_is_forgotten():
    tracker = Tracker(TrackerConfig(max_lost=5))
    box, score, label = np.array([[10.0, 10, 40, 40]]), np.array([0.9]), np.array([0])
    assert tracker.update(box, score, label, frame=0).tolist() == [1]
    assert tracker.update(box, score, label, frame=5).tolist() == [1]  # frames 1-4 dropped: 4 lost
    empty = np.zeros((0, 4))
    for f in range(6, 12):
        tracker.update(empty, np.zeros(0), np.zeros(0), frame=f)
    assert tracker.tracks == 0
    tracker.update(box, score, label, frame=12)
    assert tracker.update(box, score, label, frame=13).tolist() == [2]


def test_skipped_frames_are_predicted_over():
    """Frame indices with gaps (dropped frames, --vid-stride) move tracks by the frames elapsed."""
    mover = Mover((20, 100), (10, 0), range(100))
    tracker = Tracker()
    frames = [0, 1, 2, 3, 4, 8, 9, 10, 14, 15]  # gaps of 4 frames: 40 px, more than a box width
    got = [int(tracker.update(mover.box(f)[None], np.array([0.9]), np.array([0]), frame=f)[0]) for f in frames]
    assert set(got) == {1}


def test_ids_are_per_source():
    trackers = SourceTrackers()
    mover = Mover((20, 100), (4, 0), range(10))
    for f in range(10):
        for source_id in (0, 1):
            result = Result(mover.box(f)[None].astype(np.float32), np.array([0.9], np.float32),
                            np.array([0]), ("digit",), "detection", (240, 320), source_id=source_id,
                            frame_index=f)
            assert trackers(result).track_ids.tolist() == [1]
    assert trackers.ids_issued == 2 and trackers.tracks == 2


def test_results_carry_track_ids_into_json():
    result = Result(np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32), np.array([0.9, 0.3], np.float32),
                    np.array([0, 0]), ("digit",), "detection", (240, 320), track_ids=np.array([7, -1]))
    detections = result.to_dict()["detections"]
    assert [d["track_id"] for d in detections] == [7, None]
    result.track_ids = None
    assert "track_id" not in result.to_dict()["detections"][0]


def test_tracked_boxes_are_drawn_in_their_ids_colour():
    image = np.zeros((120, 160, 3), np.uint8)
    boxes = np.array([[10, 60, 50, 100], [80, 60, 120, 100]], float)
    draw_detections(image, boxes, np.array([0, 0]), np.array([0.9, 0.8]), ("digit",), track_ids=np.array([7, -1]))
    assert tuple(image[80, 10]) == palette(8)[7]  # the left edge of the tracked box
    assert tuple(image[80, 80]) == palette(1)[0]  # an untracked box keeps its class colour
    # An unfollowed second box of the same object is drawn first: the tracked box's tag stays on top.
    image = np.zeros((120, 160, 3), np.uint8)
    twice = np.array([[10, 60, 50, 100], [10, 60, 50, 100]], float)
    draw_detections(image, twice, np.array([0, 1]), np.array([0.9, 0.3]), ("a", "b"), track_ids=np.array([3, -1]))
    assert tuple(image[80, 10]) == palette(4)[3]
    with pytest.raises(ValueError, match="2 boxes but 1 track ids"):
        draw_detections(image, boxes, np.array([0, 0]), track_ids=np.array([1]))


def test_bad_input():
    tracker = Tracker()
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        tracker.update(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(ValueError, match="low_score <= high_score"):
        TrackerConfig(low_score=0.6, high_score=0.5)
    with pytest.raises(ValueError, match="min_hits >= 1"):
        TrackerConfig(min_hits=0)


def test_without_scipy_tracking_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgedet\[track\]'"):
        Tracker()


# -- edgedet run --track --------------------------------------------------------------------------

def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_track_gives_every_detection_a_track_id(graphs, video, tmp_path):
    out, js = tmp_path / "tracked.mp4", tmp_path / "tracked.jsonl"
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--track",
                     "--track-conf", "0.25", "--save", str(out), "--save-json", str(js))
    assert result.returncode == 0, result.stderr
    records = json_lines(js)
    detections = [d for r in records for d in r["detections"]]
    assert detections and all("track_id" in d for d in detections)
    frames_per_id = Counter(d["track_id"] for r in records for d in r["detections"] if d["track_id"] is not None)
    assert max(frames_per_id.values()) >= len(records) // 2  # one object followed through the video
    assert re.search(rf"results   {len(detections)} detections, {len(frames_per_id)} tracks?", result.stdout)
    assert re.search(r"track [\d.]+/[\d.]+", result.stdout)  # the tracker's time per frame, p50/p95


def test_run_track_with_batches_and_several_sources_tracks_each_source_alone(graphs, video, tmp_path):
    model = str(graphs("yolov3-tiny"))
    single = tmp_path / "single.jsonl"
    assert run_cli("run", "--model", model, "--source", str(video), "--track-conf", "0.25",
                   "--save-json", str(single)).returncode == 0
    listing = tmp_path / "two.txt"
    listing.write_text(f"{video}\n{video}\n")
    both = tmp_path / "both.jsonl"
    result = run_cli("run", "--model", model, "--source", str(listing), "--track", "--track-conf", "0.25",
                     "--batch", "5", "--save-json", str(both))
    assert result.returncode == 0, result.stderr
    expected = [[d["track_id"] for d in r["detections"]] for r in json_lines(single)]
    records = sorted(json_lines(both), key=lambda r: r["frame"])  # stable: each frame's two records
    assert len(records) == 2 * len(expected) and "tracks" in result.stdout
    # Each source is tracked on its own, in frame order: the same ids as a lone run, batch or not
    # (one tracker for both copies would give the second copy's objects new ids).
    for copy in range(2):
        assert [[d["track_id"] for d in r["detections"]] for r in records[copy::2]] == expected


def test_run_track_on_a_segmenter_is_one_error_line(graphs, video, tmp_path):
    result = run_cli("run", "--model", str(graphs("unet")), "--source", str(video), "--track",
                     "--save-json", str(tmp_path / "out.jsonl"))
    assert_user_error(result, "--track needs a detector graph", "segmenter")
    assert not (tmp_path / "out.jsonl").exists()


def test_run_track_on_a_graph_without_nms_is_one_error_line(graphs, video):
    result = run_cli("run", "--model", str(graphs("yolov3-tiny", nms=False)), "--source", str(video), "--track")
    assert_user_error(result, "--track needs a detector graph with NMS", "--no-nms")


def test_run_track_conf_out_of_range_is_a_usage_error(graphs, video):
    result = run_cli("run", "--model", str(graphs("yolov3-tiny")), "--source", str(video), "--track-conf", "1.5")
    assert result.returncode == 2 and "--track-conf" in result.stderr


def test_stream_track_in_the_python_api(graphs, video):
    from edgedet.runtime import load_model

    model = load_model(graphs("yolov3-tiny"))
    results = list(model.stream(str(video), track=True))
    assert len(results) == 12 and all(r.track_ids is not None and len(r.track_ids) == len(r) for r in results)
    segmenter = load_model(graphs("unet"))
    with pytest.raises(TrackingError, match="needs a detector graph"):
        next(segmenter.stream(str(video), track=True))


def test_frames_skipped_count_towards_max_lost():
    tracker = Tracker(TrackerConfig(max_lost=5))
    box, score, label = np.array([[10.0, 10, 40, 40]]), np.array([0.9]), np.array([0])
    tracker.update(box, score, label, frame=0)
    tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), frame=10)  # 10 frames unseen
    assert tracker.tracks == 0
