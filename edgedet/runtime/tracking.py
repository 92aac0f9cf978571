"""Multi-object tracking of per-frame detections: stable integer ids per source (``run --track``).

A compact ByteTrack (Zhang et al., 2022) on numpy, with a lost-track stage and a motion model made
for occlusions:

1. Every track's box is predicted forward by a constant-velocity Kalman filter on
   ``(cx, cy, w, h)`` (SORT's size-proportional noise), lost tracks included, so a track that
   has not been seen for a few frames is looked for where the object should be by now. An object
   sliding behind an occluder is seen shrinking from one side first, which slows the filter's
   box centre to about half the object's speed; a lost track moves at the speed of its box's
   faster edge instead (:func:`_hidden_motion`), and restarts its filter when found again rather
   than reading the gap as speed.
2. High-score detections are matched to all tracks by IoU of the predicted boxes, by optimal
   assignment. A detection of another class than the track's (the class its detections scored
   most for so far) costs more, needing more overlap, but is not ruled out: a detector's class
   flickers exactly when an object is partly hidden, and a per-class tracker turns every flicker
   into a new id.
3. Low-score detections are matched to the tracks still unmatched that were seen in the
   previous frame, with a stricter IoU gate: a partly hidden object's weak detection keeps its
   track alive instead of being thrown away (ByteTrack's second stage).
4. High-score detections still unmatched are matched to *lost* tracks by the distance between
   centres in units of the object's size (as last seen whole), with a gate that widens the longer
   the track has been lost, and sizes that must roughly agree. IoU alone fails here: a small
   object that was hidden for a few frames reappears a little off its prediction and overlaps it
   barely or not at all, so IoU-only trackers (SORT, ByteTrack, OC-SORT) start a new id.
5. What is left and scores high enough starts a new track, unless it mostly covers a detection
   that was just matched (the graph's per-class NMS can box one object twice, as two classes). A
   new track gets an id once it has been seen in ``min_hits`` consecutive frames (at once in a
   source's first frame). Tracks not seen for ``max_lost`` frames are dropped.

Detections keep their boxes (the tracker only attaches ids); ``-1`` marks a detection the tracker
does not follow (a weak one matching no track, a second box of a tracked object, or a track not
confirmed yet).

The optimal assignment is :func:`scipy.optimize.linear_sum_assignment`: well kept, exact, and
fast on the few-dozen-square matrices of a frame. scipy is not in the base (edge) install, which
stays numpy + OpenCV + ONNX Runtime: it comes with the ``track`` extra (and ``full``), and is
imported only when a tracker is made, with a clear message where it is missing. ``lap`` would be
smaller but is less maintained; a hand-written solver would be one more thing to get right.
``benchmarks/tracking.py`` measures the tracker against ByteTrack's stages alone and a plain IoU
tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from edgedet.errors import EdgedetError, MissingDependencyError
from edgedet.runtime.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from edgedet.runtime.metadata import GraphMetadata
from edgedet.runtime.results import Result

__all__ = ["TrackerConfig", "Tracker", "SourceTrackers", "TrackingError", "check_trackable", "tracker_config",
           "assignment_solver"]


class TrackingError(EdgedetError):
    """Tracking asked of a graph that gives no detections to track."""


def check_trackable(metadata: GraphMetadata, path: object = "") -> None:
    """Raise :class:`TrackingError` unless the graph gives final (NMS-suppressed) detections."""
    outputs = set(metadata.outputs)
    where = f"{path}: " if path else ""
    if "num_dets" in outputs:
        return
    if "predictions" in outputs:
        raise TrackingError(f"{where}--track needs a detector graph with NMS; this one was exported with "
                            f"--no-nms (unsuppressed candidates): re-export it without --no-nms")
    kind = {"segmentation": "a segmenter", "localization": "a localizer"}.get(metadata.task, metadata.task)
    raise TrackingError(f"{where}--track needs a detector graph; {metadata.model} is {kind}, "
                        f"with no detections to track")


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of :class:`Tracker`. Scores are the graph's (after its NMS and ``--conf``).

    Attributes:
        high_score: detections scoring at least this take part in the first and lost-track stages
            and may start tracks; weaker ones only keep tracks alive.
        low_score: detections below this are ignored.
        new_track_score: an unmatched detection starts a track only from this score.
        match_iou: first stage gate: IoU with the predicted box at least this.
        low_match_iou: second stage gate (weak detections): IoU at least this.
        lost_distance: lost-track stage gate: centre distance at most this many box sizes
            (``sqrt(w * h)`` of the track's size when last seen whole; 0 turns the stage off,
            leaving ByteTrack) ...
        lost_distance_growth: ... times ``1 + growth * frames lost``.
        lost_size_ratio: ... and width and height within this factor of that size (a wide
            margin: an object coming out from behind something is seen in part at first).
        class_penalty: added to the cost of a detection whose class differs from the track's
            (``1 - IoU`` in the IoU stages, distance in box sizes in the lost stage); ``inf``
            makes tracks strictly per class.
        duplicate_iou: an unmatched detection overlapping a followed one this much starts no track.
        max_lost: frames a track stays alive without a detection (30: one second at 30 FPS).
        min_hits: consecutive frames a new track must be seen before it gets an id.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.5
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    lost_distance: float = 1.0
    lost_distance_growth: float = 0.15
    lost_size_ratio: float = 4.0
    class_penalty: float = 0.3
    duplicate_iou: float = 0.7
    max_lost: int = 30
    min_hits: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self.low_score}, {self.high_score}")
        if self.max_lost < 0 or self.min_hits < 1:
            raise ValueError(f"need max_lost >= 0 and min_hits >= 1, got {self.max_lost}, {self.min_hits}")


def tracker_config(conf: float | None = None) -> TrackerConfig:
    """The default configuration, or one whose strong detections start at ``conf`` (``--track-conf``):
    new tracks start from ``conf`` too, weak detections count from ``conf / 5``."""
    if conf is None:
        return TrackerConfig()
    return TrackerConfig(high_score=conf, new_track_score=conf, low_score=min(TrackerConfig.low_score, conf / 5))


def assignment_solver():
    """scipy's ``linear_sum_assignment``, or a :class:`MissingDependencyError` saying how to get it."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise MissingDependencyError("tracking needs scipy: pip install 'edgedet[track]' (or pip install scipy)") \
            from None
    return linear_sum_assignment


# SORT / ByteTrack's Kalman noise: standard deviations proportional to the box size, so one set of
# numbers serves small and large objects.
_STD_POSITION = 1.0 / 20
_STD_VELOCITY = 1.0 / 160
_RESTART_AFTER = 3  # frames lost after which a found track restarts its filter (see _correct)
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def _initial_cov(z: np.ndarray) -> np.ndarray:
    """A new track's state covariance: position known, speed not (SORT's, by box size)."""
    wh = np.tile(z[2:], 2)  # w, h, w, h
    return np.diag(np.concatenate([2 * _STD_POSITION * wh, 10 * _STD_VELOCITY * wh]) ** 2)


def _hidden_motion(mean: np.ndarray) -> None:
    """Make a lost track's state move as the hidden object does: at its speed, at its size.

    An object sliding behind an occluder is seen shrinking from one side: that edge stands still
    while the far edge keeps the object's speed, so the box centre (which the filter tracks) slows
    to about half of it, and a prediction from it falls behind. When one edge moves, per axis, at
    most about twice as fast as the centre (a box cut by an edge, not one growing around a still
    centre), the faster edge's speed is the object's.
    """
    for axis in (0, 1):
        v, dw = mean[4 + axis], mean[6 + axis]
        if v != 0 and abs(dw) <= 2.5 * abs(v):
            edges = (v - dw / 2, v + dw / 2)
            fast = max(edges, key=abs)
            if fast * v > 0:
                mean[4 + axis] = fast
    mean[6:] = 0  # and keeps its size


@dataclass
class _Track:
    mean: np.ndarray  # (8,) cx, cy, w, h and their velocities per frame
    cov: np.ndarray  # (8, 8)
    label: int  # the class with the most score over the track's detections
    votes: dict[int, float] = field(default_factory=dict)  # class -> summed detection scores
    full_wh: np.ndarray = field(default_factory=lambda: np.zeros(2))  # size when last seen whole
    hits: int = 1  # consecutive frames seen (while tentative)
    lost: int = 0  # frames since last seen
    id: int = -1  # -1 until confirmed

    @property
    def box(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.mean[None, :4], min_size=1e-3)[0]


class Tracker:
    """Tracks the detections of one source, frame by frame (not thread-safe: one per source).

    Example::

        tracker = Tracker()
        for result in model.stream("video.mp4"):
            ids = tracker.update(result.boxes, result.scores, result.labels, result.frame_index)
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._assign = assignment_solver()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame: int | None = None

    @property
    def tracks(self) -> int:
        """Confirmed tracks alive now (seen in this frame or lost for fewer than ``max_lost``)."""
        return sum(t.id >= 0 for t in self._tracks)

    @property
    def ids_issued(self) -> int:
        return self._next_id - 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               frame: int | None = None) -> np.ndarray:
        """One frame's detections -> their track ids (int64 ``[N]``; ``-1``: not tracked).

        Args:
            boxes: float ``[N, 4]`` x1, y1, x2, y2 (any pixel frame, the same every call).
            scores: ``[N]`` confidences.
            labels: ``[N]`` class ids (a track prefers detections of its class).
            frame: the frame's index in its source. Tracks are predicted forward by the frames
                since the last call (dropped or skipped frames count); ``None``: the next frame.
        """
        cfg = self.config
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        labels = np.asarray(labels, np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
        first_frame = self._frame is None
        frame = (0 if first_frame else self._frame + 1) if frame is None else int(frame)
        steps = 1 if first_frame else max(1, frame - self._frame)
        self._frame = frame
        self._predict(min(steps, cfg.max_lost + 1))

        owners: dict[int, _Track] = {}  # detection index -> its track
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        tracks = list(self._tracks)
        seen_last = np.array([t.lost == 0 for t in tracks], bool)

        def match(dets: np.ndarray, candidates: np.ndarray, cost: np.ndarray, gate: float) -> None:
            if not len(dets) or not len(candidates):
                return
            for r, c in zip(*self._assign(cost)):
                if cost[r, c] <= gate:
                    owners[int(dets[r])] = tracks[candidates[c]]

        def unmatched_tracks() -> np.ndarray:
            taken = {id(t) for t in owners.values()}
            return np.array([id(t) not in taken for t in tracks], bool)

        # 1. strong detections vs every track, by IoU with the predicted box
        every = np.arange(len(tracks))
        match(high, every, self._iou_cost(boxes[high], labels[high], every), 1 - cfg.match_iou)
        # 2. weak detections vs tracks seen in the previous frame and not matched yet
        candidates = np.flatnonzero(unmatched_tracks() & seen_last)
        match(low, candidates, self._iou_cost(boxes[low], labels[low], candidates), 1 - cfg.low_match_iou)
        # 3. strong detections left vs lost tracks, by centre distance in box sizes
        overlap = box_iou(boxes, boxes) if len(boxes) else np.zeros((0, 0))

        def duplicate(d: int) -> bool:  # mostly covers a detection that is followed already
            return bool(owners) and overlap[d, list(owners)].max() >= cfg.duplicate_iou

        if cfg.lost_distance > 0:
            dets = np.array([d for d in high if d not in owners and not duplicate(d)], np.int64)
            candidates = np.flatnonzero(unmatched_tracks() & ~seen_last)
            match(dets, candidates, self._lost_cost(boxes[dets], labels[dets], candidates), 1.0)

        for d, track in owners.items():
            self._correct(track, boxes[d], labels[d], scores[d])
        matched = {id(t) for t in owners.values()}
        for track in tracks:
            if id(track) not in matched:
                track.lost += steps  # frames, skipped ones included
                track.hits = 0
        for d in np.argsort(-scores, kind="stable"):  # the strongest box of an object leads
            if scores[d] < cfg.new_track_score:
                break
            if d in owners or duplicate(d):
                continue
            owners[int(d)] = self._start(boxes[d], labels[d], scores[d])
        for track in owners.values():  # ids are given in order of detection, so they read well
            if track.id < 0 and (track.hits >= cfg.min_hits or first_frame):
                track.id, self._next_id = self._next_id, self._next_id + 1
        # Confirmed tracks live for max_lost frames unseen; a tentative one must be seen every frame.
        self._tracks = [t for t in self._tracks if t.lost <= (cfg.max_lost if t.id >= 0 else 0)]
        ids = np.full(len(boxes), -1, np.int64)
        for d, track in owners.items():
            ids[d] = track.id
        return ids

    # -- the filter ------------------------------------------------------------------------------

    def _start(self, box: np.ndarray, label: int, score: float) -> _Track:
        z = xyxy_to_cxcywh(box[None], min_size=1e-3)[0]
        track = _Track(np.concatenate([z, np.zeros(4)]), _initial_cov(z), int(label), {int(label): score},
                       z[2:].copy())
        self._tracks.append(track)
        return track

    def _predict(self, steps: int) -> None:
        for track in self._tracks:
            for _ in range(steps):
                if track.lost:
                    _hidden_motion(track.mean)
                wh = np.tile(track.mean[2:4], 2)
                q = np.diag(np.concatenate([_STD_POSITION * wh, _STD_VELOCITY * wh]) ** 2)
                track.mean = _F @ track.mean
                track.cov = _F @ track.cov @ _F.T + q
        self._predicted = np.array([t.box for t in self._tracks]).reshape(-1, 4)

    def _correct(self, track: _Track, box: np.ndarray, label: int, score: float) -> None:
        z = xyxy_to_cxcywh(box[None], min_size=1e-3)[0]
        if track.lost >= _RESTART_AFTER:
            # Found again after frames unseen: a filter update would read the whole gap between
            # prediction and detection as speed and overshoot. Restart at the detection with the
            # speed the track was predicted with.
            track.mean = np.concatenate([z, track.mean[4:6], np.zeros(2)])
            track.cov = _initial_cov(z)
            self._observe(track, z, label, score)
            return
        r = np.diag((_STD_POSITION * np.tile(track.mean[2:4], 2)) ** 2)
        s = _H @ track.cov @ _H.T + r
        gain = np.linalg.solve(s, _H @ track.cov).T  # (8, 4); s and cov are symmetric
        track.mean = track.mean + gain @ (z - _H @ track.mean)
        track.cov = track.cov - gain @ s @ gain.T
        self._observe(track, z, label, score)

    @staticmethod
    def _observe(track: _Track, z: np.ndarray, label: int, score: float) -> None:
        # A box cut by an occluder shrinks for a few frames; the size before that, forgotten
        # slowly, is the object's, and what the lost-track gate measures distances in.
        track.full_wh = np.maximum(z[2:], 0.95 * track.full_wh + 0.05 * z[2:])
        track.votes[int(label)] = track.votes.get(int(label), 0.0) + float(score)
        track.label, track.lost = max(track.votes, key=track.votes.get), 0
        track.hits += 1

    # -- costs -----------------------------------------------------------------------------------

    def _iou_cost(self, boxes: np.ndarray, labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        if not len(boxes) or not len(tracks):
            return np.zeros((len(boxes), len(tracks)))
        return 1.0 - box_iou(boxes, self._predicted[tracks]) + self._class_cost(labels, tracks)

    def _lost_cost(self, boxes: np.ndarray, labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """Centre distance over (box size x the gate), so the gate is 1; pairs out of it cost 2."""
        if not len(boxes) or not len(tracks):
            return np.zeros((len(boxes), len(tracks)))
        cfg = self.config
        det = xyxy_to_cxcywh(boxes, min_size=1e-3)
        pred = np.array([self._tracks[t].mean[:4] for t in tracks])
        full = np.array([self._tracks[t].full_wh for t in tracks])
        lost = np.array([self._tracks[t].lost for t in tracks], np.float64)
        scale = np.sqrt(full.prod(1)) * cfg.lost_distance * (1 + cfg.lost_distance_growth * lost)
        dist = np.linalg.norm(det[:, None, :2] - pred[None, :, :2], axis=-1) / scale[None]
        ratio = np.abs(np.log(det[:, None, 2:] / full[None])).max(-1)
        cost = dist + self._class_cost(labels, tracks)
        return np.where(ratio <= np.log(cfg.lost_size_ratio), cost, 2.0 + cost)

    def _class_cost(self, labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        differ = labels[:, None] != np.array([self._tracks[t].label for t in tracks])[None]
        # A finite stand-in for inf keeps the assignment solvable; the gates (<= 1) reject it.
        return differ * min(self.config.class_penalty, 1e6)


class SourceTrackers:
    """One :class:`Tracker` per source of a stream (ids are per source), fed results in frame order.

    Calling it on a :class:`Result` sets ``result.track_ids`` and returns the result.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        assignment_solver()  # fail before the first frame where scipy is missing
        self._trackers: dict[int, Tracker] = {}

    @property
    def ids_issued(self) -> int:
        """Track ids given so far, over all sources."""
        return sum(t.ids_issued for t in self._trackers.values())

    def __call__(self, result: Result) -> Result:
        tracker = self._trackers.get(result.source_id)
        if tracker is None:
            tracker = self._trackers[result.source_id] = Tracker(self.config)
        result.track_ids = tracker.update(result.boxes, result.scores, result.labels, result.frame_index)
        return result

    def track(self, results: Iterable[Result]) -> Iterator[Result]:
        """Track a stream of results; closing this closes ``results`` (a stream's capture threads)."""
        try:
            for result in results:
                yield self(result)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    @property
    def tracks(self) -> int:
        """Confirmed tracks alive now, over all sources."""
        return sum(t.tracks for t in self._trackers.values())
