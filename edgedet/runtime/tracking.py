"""Multi-object tracking of per-frame detections: stable integer ids per source (``run --track``).

A compact ByteTrack (Zhang et al., 2022) on numpy, with a lost-track stage and a motion model made
for occlusions:

1. Every track's box is predicted forward by a constant-velocity Kalman filter on
   ``(cx, cy, w, h)`` (SORT's size-proportional noise). A lost track is predicted too, so that it
   is looked for where the object should be by now, but not by the filter: an object sliding
   behind an occluder is seen cut, shrinking from one side, which slows the filter's box centre
   to about half the object's speed (or turns it round, when the object bounces while seen cut).
   A lost track's box is fitted to its last sightings edge by edge, moves at the speed of the
   edge that was moving while the other stood at the occluder, at the object's whole size
   (:func:`_hidden_motion`); found again, it restarts its filter rather than reading the gap as
   speed.
2. High-score detections are matched to all tracks by IoU of the predicted boxes, by optimal
   assignment. A detection of another class than the track's (the class its detections scored
   most for so far) costs more, needing more overlap, but is not ruled out: a detector's class
   flickers exactly when an object is partly hidden, and a per-class tracker turns every flicker
   into a new id.
3. Low-score detections are matched to the tracks still unmatched that were seen in the
   previous frame, with a stricter IoU gate: a partly hidden object's weak detection keeps its
   track alive instead of being thrown away (ByteTrack's second stage). Then high-score
   detections left over are matched to those tracks by IoU alone, whatever their class: the box
   of a partly hidden object, of the "wrong" class, would otherwise be taken by a lost track of
   the class it shows in stage 4.
4. High-score detections still unmatched (one per object: the strongest of boxes overlapping
   like NMS duplicates) are matched to *lost* tracks by how far the detection's centre lies from
   where it could be within the predicted whole box (an object coming out from behind something
   is seen in part), in units of the object's size (as last seen whole), with a gate that widens
   the longer the track has been lost; a detection must not be much larger than the object, and
   not more than ``lost_size_ratio`` smaller. IoU alone fails here: a small object that was
   hidden for a few frames reappears a little off its prediction and overlaps it barely or not
   at all, so IoU-only trackers (SORT, ByteTrack, OC-SORT) start a new id.
5. What is left and scores high enough starts a new track, unless it overlaps a detection that
   was just matched like an NMS duplicate (the graph's per-class NMS can box one object twice,
   as two classes, or box the parts of a partly hidden one). A new track gets an id once it has
   been seen in ``min_hits`` consecutive frames (at once in a source's first frame); a tentative
   track whose box duplicates a confirmed track's is dropped, so that two tracks never take
   turns on one object. Tracks not seen for ``max_lost`` frames are dropped.

Detections keep their boxes (the tracker only attaches ids); ``-1`` marks a detection the tracker
does not follow (a weak one matching no track, a second box of a tracked object, or a track not
confirmed yet).

The optimal assignment is :func:`scipy.optimize.linear_sum_assignment`: well kept, exact, and
fast on the few-dozen-square matrices of a frame. scipy is not in the base (edge) install, which
stays numpy + OpenCV + ONNX Runtime: it comes with the ``track`` extra (and ``full``), and is
imported only when a tracker is made, with a clear message where it is missing. ``lap`` would be
smaller but is less maintained; a hand-written solver would be one more thing to get right.
``benchmarks/tracking.py`` measures the tracker against its IoU stages alone, a plain IoU tracker
and the ``trackers`` package's ByteTrack, OC-SORT and SORT on the same detections.
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
        lost_size_ratio: ... and width and height at most this factor smaller than that size (a
            wide margin: an object coming out from behind something is seen in part at first),
            and at most twice as large.
        class_penalty: added to the cost of a detection whose class differs from the track's
            (``1 - IoU`` in the IoU stages, distance in box sizes in the lost stage); ``inf``
            makes tracks strictly per class.
        duplicate_iou: a detection overlapping a followed one this much (IoU) is a second box of
            its object (NMS keeps boxes overlapping this much only where their classes differ):
            it starts no track, and takes no lost track.
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
    duplicate_iou: float = 0.5
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
_FIT = 8  # a hidden object's motion is fitted to its sightings in the last this many frames
_CUT = 0.8  # a box side under this fraction of the object's size is cut (by an occluder)...
_STILL = 0.35  # ... where one edge moves at most this fraction of the other's speed
_LARGER = 2.0  # a lost track's detection may be at most this much larger than the object was
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)
_H = np.eye(4, 8)


def _initial_cov(z: np.ndarray) -> np.ndarray:
    """A new track's state covariance: position known, speed not (SORT's, by box size)."""
    wh = np.tile(z[2:], 2)  # w, h, w, h
    return np.diag(np.concatenate([2 * _STD_POSITION * wh, 10 * _STD_VELOCITY * wh]) ** 2)


def _hidden_motion(seen: list[tuple[int, np.ndarray]], full_wh: np.ndarray, frame: int) -> np.ndarray:
    """Where a hidden object is in ``frame``: its state ``(cx, cy, w, h, vx, vy, 0, 0)``, whole size.

    From straight lines fitted to each edge of its last sightings ``(frame, box xyxy)``. An object
    sliding behind something (an occluder, another object) is seen cut: the edge at the occluder
    stands still while the free edge keeps the object's speed, so the box centre slows to half of
    it (and a filter of centres falls behind). Per axis, where the box was cut and one edge moved
    while the other stood, the moving edge gives the speed, and the whole box hangs from it.
    """
    seen = [(f, box) for f, box in seen if f >= seen[-1][0] - _FIT]  # of one passage, not the one before
    frames = np.array([f for f, _ in seen], np.float64) - seen[-1][0]
    boxes = np.array([box for _, box in seen])
    if len(seen) >= 2 and np.ptp(frames) > 0:
        slope, edge = np.polyfit(frames, boxes, 1)  # (4,), (4,): per edge, at the last sighting
    else:
        slope, edge = np.zeros(4), boxes[-1]
    mean = np.zeros(8)
    for axis in (0, 1):
        lo, hi, v_lo, v_hi = edge[axis], edge[axis + 2], slope[axis], slope[axis + 2]
        full = full_wh[axis]
        fast, still = (v_lo, v_hi) if abs(v_lo) >= abs(v_hi) else (v_hi, v_lo)
        if hi - lo < _CUT * full and abs(still) < _STILL * abs(fast):
            mean[axis] = lo + full / 2 if fast == v_lo else hi - full / 2
            mean[4 + axis] = fast
        else:
            mean[axis], mean[4 + axis] = (lo + hi) / 2, (v_lo + v_hi) / 2
        mean[axis] += mean[4 + axis] * (frame - seen[-1][0])
        mean[2 + axis] = full
    return mean


@dataclass
class _Track:
    mean: np.ndarray  # (8,) cx, cy, w, h and their velocities per frame
    cov: np.ndarray  # (8, 8)
    label: int  # the class with the most score over the track's detections
    votes: dict[int, float] = field(default_factory=dict)  # class -> summed detection scores
    full_wh: np.ndarray = field(default_factory=lambda: np.zeros(2))  # size when last seen whole
    seen: list[tuple[int, np.ndarray]] = field(default_factory=list)  # last sightings: frame, box xyxy
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

        def match(dets: np.ndarray, candidates: np.ndarray, cost: np.ndarray, allowed: np.ndarray) -> None:
            if not len(dets) or not len(candidates):
                return
            for r, c in zip(*self._assign(cost)):
                if allowed[r, c]:
                    owners[int(dets[r])] = tracks[candidates[c]]

        def unmatched_tracks() -> np.ndarray:
            taken = {id(t) for t in owners.values()}
            return np.array([id(t) not in taken for t in tracks], bool)

        # 1. strong detections vs every track, by IoU with the predicted box
        every = np.arange(len(tracks))
        match(high, every, *self._iou_cost(boxes[high], labels[high], every, cfg.match_iou))
        # 2. weak detections vs tracks seen in the previous frame and not matched yet
        candidates = np.flatnonzero(unmatched_tracks() & seen_last)
        match(low, candidates, *self._iou_cost(boxes[low], labels[low], candidates, cfg.low_match_iou))
        overlap = box_iou(boxes, boxes) if len(boxes) else np.zeros((0, 0))

        def duplicate(d: int) -> bool:  # overlaps a followed detection like an NMS duplicate
            return bool(owners) and overlap[d, list(owners)].max() >= cfg.duplicate_iou

        # 2b. strong detections left vs those tracks, by IoU alone: a partly hidden object's class
        # flickers, and its box, left over, would be taken by a lost track of the class it shows
        if np.isfinite(cfg.class_penalty):
            dets = np.array([d for d in high if d not in owners and not duplicate(d)], np.int64)
            candidates = np.flatnonzero(unmatched_tracks() & seen_last)
            cost = 1.0 - box_iou(boxes[dets], self._predicted[candidates]) if len(dets) and len(candidates) \
                else np.zeros((len(dets), len(candidates)))
            match(dets, candidates, cost, cost <= 1.0 - cfg.match_iou)
        # 3. strong detections left vs lost tracks, by distance from the predicted whole box
        if cfg.lost_distance > 0:
            dets = []  # strongest first, and one box per object: two boxes would take two tracks
            for d in high[np.argsort(-scores[high], kind="stable")]:
                if d not in owners and not duplicate(d) and not (dets and overlap[d, dets].max() >= cfg.duplicate_iou):
                    dets.append(d)
            dets = np.array(dets, np.int64)
            candidates = np.flatnonzero(unmatched_tracks() & ~seen_last)
            cost = self._lost_cost(boxes[dets], labels[dets], candidates)
            match(dets, candidates, cost, cost <= 1.0)

        # A tentative track on a second box of a followed object (a box per class, or a box of
        # its visible part) would be confirmed next frame and take turns with the object's track.
        followed = [d for d, t in owners.items() if t.id >= 0]
        for d in [d for d, t in owners.items() if t.id < 0]:
            if followed and overlap[d, followed].max() >= cfg.duplicate_iou:
                del owners[d]
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
                       z[2:].copy(), [(self._frame, box.astype(np.float64))])
        self._tracks.append(track)
        return track

    def _predict(self, steps: int) -> None:
        for track in self._tracks:
            for _ in range(steps):
                wh = np.tile(track.mean[2:4], 2)
                q = np.diag(np.concatenate([_STD_POSITION * wh, _STD_VELOCITY * wh]) ** 2)
                track.mean = _F @ track.mean
                track.cov = _F @ track.cov @ _F.T + q
            if track.lost:
                track.mean = _hidden_motion(track.seen, track.full_wh, self._frame)
        self._predicted = np.array([t.box for t in self._tracks]).reshape(-1, 4)

    def _correct(self, track: _Track, box: np.ndarray, label: int, score: float) -> None:
        z = xyxy_to_cxcywh(box[None], min_size=1e-3)[0]
        if track.lost >= _RESTART_AFTER:
            # Found again after frames unseen: a filter update would read the whole gap between
            # prediction and detection as speed and overshoot. Restart at the detection with the
            # speed the track was predicted with.
            track.mean = np.concatenate([z, track.mean[4:6], np.zeros(2)])
            track.cov = _initial_cov(z)
            self._observe(track, box, label, score)
            return
        r = np.diag((_STD_POSITION * np.tile(track.mean[2:4], 2)) ** 2)
        s = _H @ track.cov @ _H.T + r
        gain = np.linalg.solve(s, _H @ track.cov).T  # (8, 4); s and cov are symmetric
        track.mean = track.mean + gain @ (z - _H @ track.mean)
        track.cov = track.cov - gain @ s @ gain.T
        self._observe(track, box, label, score)

    def _observe(self, track: _Track, box: np.ndarray, label: int, score: float) -> None:
        # A box cut by an occluder shrinks for a few frames; the size before that, forgotten
        # slowly, is the object's, and what the lost-track gate measures distances in.
        track.seen = [*track.seen[-(_FIT - 1):], (self._frame, box.astype(np.float64))]
        wh = np.maximum(box[2:] - box[:2], 1e-3)
        track.full_wh = np.maximum(wh, 0.95 * track.full_wh + 0.05 * wh)
        track.votes[int(label)] = track.votes.get(int(label), 0.0) + float(score)
        track.label, track.lost = max(track.votes, key=track.votes.get), 0
        track.hits += 1

    # -- costs -----------------------------------------------------------------------------------

    def _iou_cost(self, boxes: np.ndarray, labels: np.ndarray, tracks: np.ndarray,
                  gate: float) -> tuple[np.ndarray, np.ndarray]:
        """``1 - IoU`` with the predicted boxes plus the class cost, and the pairs it allows: IoU at
        least ``gate``, more for another class."""
        cost = 1.0 - box_iou(boxes, self._predicted[tracks]) + self._class_cost(labels, tracks) \
            if len(boxes) and len(tracks) else np.zeros((len(boxes), len(tracks)))
        return cost, cost <= 1.0 - gate

    def _lost_cost(self, boxes: np.ndarray, labels: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """How far each detection lies from a lost track's predicted whole box, over (the object's
        size x the gate), so the gate is 1, plus the class cost; pairs of sizes that cannot be
        one object cost 2 more."""
        if not len(boxes) or not len(tracks):
            return np.zeros((len(boxes), len(tracks)))
        cfg = self.config
        det = xyxy_to_cxcywh(boxes, min_size=1e-3)
        pred = np.array([self._tracks[t].mean for t in tracks])
        full = np.array([self._tracks[t].full_wh for t in tracks])
        lost = np.array([self._tracks[t].lost for t in tracks], np.float64)
        scale = np.sqrt(full.prod(1)) * cfg.lost_distance * (1 + cfg.lost_distance_growth * lost)
        # An object coming out from behind something is seen in part, anywhere within its whole
        # box: the distance is how far the detection's centre lies outside where it could be.
        slack = np.maximum(full[None] - det[:, None, 2:], 0) / 2  # (D, T, 2)
        off = np.maximum(np.abs(det[:, None, :2] - pred[None, :, :2]) - slack, 0)
        dist = np.linalg.norm(off, axis=-1) / scale[None]
        # Seen in part, an object looks smaller than it is, never much bigger.
        ratio = det[:, None, 2:] / full[None]  # (D, T, 2)
        fits = ((ratio >= 1 / cfg.lost_size_ratio) & (ratio <= _LARGER)).all(-1)
        cost = dist + self._class_cost(labels, tracks)
        return np.where(fits, cost, 2.0 + cost)

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
