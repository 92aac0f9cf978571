"""``edgedet run``: sources -> letterbox -> graph -> drawing, video, JSON lines, window.

Three kinds of thread overlap the work: one capture thread per source reads, decodes and
letterboxes frames into a bounded queue, the calling thread runs inference, and one writer thread
draws, encodes and writes. The writer's queue is bounded too, so a slow disk slows inference
rather than filling memory (and, for live sources, makes the capture side drop old frames).
With ``--serve`` the writer also hands each frame to the live view (:mod:`edgedet.runtime.serve`),
which draws and encodes only for a connected client, on that client's thread.

SIGINT / SIGTERM stop the reading; frames already read are finished, the video container and the
JSON lines are finalised and the summary is printed. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgedet.runtime.api import ExportedModel, load_model
from edgedet.runtime.backends import DEFAULT_SPINNING, ProviderWarning
from edgedet.runtime.draw import draw_status
from edgedet.runtime.files import check_writable_file
from edgedet.runtime.metadata import read_metadata
from edgedet.runtime.results import Result
from edgedet.runtime.serve import LiveView, wait_until_interrupted
from edgedet.runtime.sources import IMAGE_SUFFIXES, CaptureGroup, Source, SourceError, open_sources, quiet_video_logs
from edgedet.runtime.timing import StageTimes
from edgedet.runtime.tracking import SourceTrackers, assignment_solver, check_trackable, tracker_config
from edgedet.runtime.writers import (VIDEO_FOURCC, DiskFullError, Display, ImageSink, JsonlSink, OutputError,
                                     VideoSink, check_display, output_path)

__all__ = ["RunOptions", "RunSummary", "run", "run_pipeline"]

Say = Callable[[str], None]


@dataclass
class RunOptions:
    """What ``edgedet run`` does besides inference (see the CLI's help for each)."""

    batch: int = 1
    conf: float | None = None
    max_frames: int | None = None
    vid_stride: int = 1
    drop: bool | None = None  # None: live sources drop, files never
    show: bool = False
    save: Path | None = None
    save_json: Path | None = None
    progress: bool = True
    open_timeout: float = 10.0
    reconnect_attempts: int = 5
    track: bool = False
    track_conf: float | None = None  # None: TrackerConfig's high_score
    serve: tuple[str, int] | None = None  # (host, port) of the live view
    serve_linger: bool = False  # keep serving after the source ends, until Ctrl-C


@dataclass
class RunSummary:
    """What a run did: frame counts, speed, per-stage milliseconds, where it wrote."""

    model: str
    task: str
    backend: str
    providers: list[str]
    batch: int
    sources: list[str]
    frames_read: int = 0
    processed: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0
    detections: int = 0
    seconds: float = 0.0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    stopped_by: str | None = None
    raw: bool = False
    problems: list[str] = field(default_factory=list)
    tracks: int | None = None  # with --track: track ids given, over all sources
    instances: dict[str, int] | None = None  # instance-mask graphs: masks per class name, over all frames

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["fps"] = round(self.fps, 3)
        return doc

    def lines(self) -> list[str]:
        out = [f"model     {self.model} ({self.task}) on {self.backend} [{', '.join(self.providers)}], "
               f"batch {self.batch}"]
        out += [f"source    {s}" for s in self.sources]
        out.append(f"frames    read {self.frames_read}, processed {self.processed}, dropped {self.dropped}, "
                   f"corrupt {self.corrupt}" + (f", reconnects {self.reconnects}" if self.reconnects else ""))
        if self.task != "segmentation":
            kind = "unsuppressed candidates (graph without NMS)" if self.raw else "detections"
            out.append(f"results   {self.detections} {kind}"
                       + ("" if self.tracks is None else f", {_plural(self.tracks, 'track')}"))
        if self.instances is not None:
            out.append("masks     " + (", ".join(f"{name} {n}" for name, n in sorted(self.instances.items()))
                                       or "none") + "  (instances per class)")
        out.append(f"speed     {self.fps:.1f} FPS ({_plural(self.processed, 'frame')} in {self.seconds:.2f} s)"
                   + (f"; stopped by {self.stopped_by}" if self.stopped_by else ""))
        if self.stages:
            out.append("stage ms  " + "  ".join(
                f"{name}{' (batch)' if name == 'inference' and self.batch > 1 else ''} "
                f"{v['p50']:.1f}/{v['p95']:.1f}" for name, v in self.stages.items()) + "  (p50/p95)")
        for path in self.outputs:
            out.append(f"wrote     {path}")
        return out


def _count_instances(summary: RunSummary, result: Result) -> None:
    # A new dict each frame: the live view may be serialising the previous one on another thread.
    counts = dict(summary.instances or {})
    for name in result.names:
        counts[name] = counts.get(name, 0) + 1
    summary.instances = counts


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Outputs:
    """The sinks of a run, fed by the writer thread."""

    def __init__(self, options: RunOptions, sources: Sequence[Source]) -> None:
        self.options = options
        self.sources = list(sources)
        self.videos: dict[int, VideoSink] = {}
        self.displays: dict[int, Display] = {}  # one window per source
        self.images: ImageSink | None = None
        self.quit = False  # the user closed a window
        if options.show:
            check_display()
        save = options.save
        if save is not None and save.suffix.lower() in IMAGE_SUFFIXES:
            total = sum(s.length or 0 for s in sources) if all(s.length is not None for s in sources) else None
            if options.max_frames is not None and total is not None:
                total = min(total, options.max_frames)
            self.images = ImageSink(save, single=total == 1, sources=len(sources))
        self.json: JsonlSink | None = None
        self.error: BaseException | None = None  # a sink that could not be finalised
        self.lost: list[str] = []  # outputs not renamed into place because the run failed
        self.written: list[str] = []
        try:  # every output is locked (and stale temporaries cleaned) before the first frame
            if save is not None and self.images is None:
                for i, source in enumerate(self.sources):
                    self.videos[i] = VideoSink(output_path(save, i, len(self.sources)), self._video_fps(source))
            self.json = JsonlSink(options.save_json) if options.save_json else None
        except BaseException as e:
            self.close(e)
            raise

    def _video_fps(self, source: Source) -> float | None:
        fps = source.fps if source.kind != "images" else 1.0
        if source.fps and self.options.vid_stride > 1 and source.kind == "video":
            fps = source.fps / self.options.vid_stride
        return fps

    @property
    def draws(self) -> bool:
        return self.options.save is not None or self.options.show

    def write(self, result: Result, image) -> None:
        save = self.options.save
        if save is not None and self.images is None:
            self.videos[result.source_id].write(image)
        elif self.images is not None:
            self.images.write(image, result.frame_index, result.source_id)
        if self.json is not None:
            self.json.write(result.to_dict())
        if self.options.show:
            display = self.displays.get(result.source_id)
            if display is None:
                display = self.displays[result.source_id] = Display(
                    f"edgedet: {self.sources[result.source_id].name}"[:100])
            if not display.show(image):
                self.quit = True

    def close(self, error: BaseException | None = None) -> list[str]:
        """Finalise the outputs of a run that ended without ``error`` (or was interrupted); returns
        what was written. After an error nothing is renamed into place, except that the JSON lines
        of a run that ran out of space keep their complete records. A video that cannot be
        finalised sets :attr:`error`."""
        written = []
        failed = error
        for sink in self.videos.values():
            if failed is not None:
                if sink.frames:
                    self.lost.append(str(sink.path))
                sink.discard()
                continue
            try:
                path = sink.close()
            except OutputError as e:
                failed = self.error = e
                self.lost.append(str(sink.path))
                continue
            if path is not None:
                width, height = sink.size or (0, 0)
                written.append(f"{path} ({_plural(sink.frames, 'frame')}, {width}x{height}, {sink.fps:g} fps, "
                               f"{sink.fourcc})")
        if self.images is not None and self.images.frames:
            where = self.images.close()
            written.append(f"{where} ({_plural(self.images.frames, 'image')})")
        if self.json is not None:
            if failed is None or isinstance(failed, DiskFullError):
                try:
                    path = self.json.close()
                    if path is not None:
                        written.append(f"{path} ({_plural(self.json.lines, 'line')})")
                except OutputError as e:
                    self.error = self.error or e
                    self.lost.append(str(self.json.path))
            else:
                self.json.discard()
        for display in self.displays.values():
            display.close()
        self.written = written
        return written

    def explain(self, error: BaseException) -> BaseException:
        """``error`` saying which outputs were not written and which were kept (out of space)."""
        if not isinstance(error, DiskFullError):
            return error
        parts = [str(error)]
        if self.lost:
            parts.append(f"{', '.join(self.lost)} not written")
        if self.json is not None and any(w.startswith(str(self.json.path) + " ") for w in self.written):
            parts.append(f"kept {self.json.path} with {_plural(self.json.lines, 'complete line')}")
        return DiskFullError("; ".join(parts))


class _Writer(threading.Thread):
    """Draws and writes results in order, off the inference thread."""

    def __init__(self, outputs: _Outputs, times: StageTimes, progress, stop: threading.Event, maxsize: int,
                 live: LiveView | None = None) -> None:
        super().__init__(name="writer", daemon=True)
        self.outputs = outputs
        self.live = live  # given each frame as it is written (it draws and encodes only for a client)
        self.times = times
        self.progress = progress
        self.stop = stop
        self.queue: queue.Queue[Result | None] = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        # The FPS drawn on frames is the summary's: frames handled / seconds since the run started.
        self.started = time.perf_counter()
        self._handled = 0

    def run(self) -> None:
        while True:
            result = self.queue.get()
            if result is None:
                return
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._handle(result)
            except BaseException as e:  # reported by the main thread after finalising
                self.error = e
                self.stop.set()

    def _handle(self, result: Result) -> None:
        t0 = time.perf_counter()
        self._handled += 1
        fps = self._handled / max(t0 - self.started, 1e-6)
        image = result.image
        if self.outputs.draws and image is not None:
            image = result.plot(image, copy=False)  # the frame is ours: draw on it
            if self._handled > 1 and self.outputs.images is None:  # annotated photos carry no FPS
                draw_status(image, f"{fps:.1f} FPS")
        t1 = time.perf_counter()
        self.outputs.write(result, image)
        if self.live is not None and image is not None:
            self.live.publish(result, image, drawn=self.outputs.draws, fps=fps)
        t2 = time.perf_counter()
        self.times.add("draw", (t1 - t0) * 1e3)
        self.times.add("write", (t2 - t1) * 1e3)
        if self.outputs.quit:
            self.stop.set()
        if self.progress is not None:
            self.progress.update(1)
        result.image = None  # release the frame

    def put(self, result: Result | None) -> None:
        while True:
            try:
                self.queue.put(result, timeout=0.2)
                return
            except queue.Full:
                if not self.is_alive():
                    return


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, say_err: Say) -> Iterator[dict[str, str]]:
    """First SIGINT/SIGTERM: set ``stop`` (the run finishes cleanly); a second one aborts."""
    state: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set() and state.get("by"):
            raise KeyboardInterrupt
        state["by"] = signal.Signals(signum).name
        stop.set()
        say_err(f"{state['by']}: stopping; finishing the frames in flight (Ctrl-C again to abort)")

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _progress_bar(sources: Sequence[Source], max_frames: int | None, enabled: bool):
    if not enabled or any(s.live or s.length is None for s in sources):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    total = sum(s.length for s in sources)  # type: ignore[misc]
    if max_frames is not None:
        total = min(total, max_frames)
    return tqdm(total=total, unit="frame", disable=None, file=sys.stderr, dynamic_ncols=True, leave=False)


def _tally(summary: RunSummary, sources: Sequence[Source], group: CaptureGroup, times: StageTimes,
           trackers: SourceTrackers | None) -> None:
    """Fill in what the sources, the capture group, the stage timer and the trackers counted."""
    summary.frames_read = sum(s.frames_read for s in sources)
    summary.corrupt = sum(s.corrupt for s in sources)
    summary.reconnects = sum(s.reconnects for s in sources)
    summary.dropped = group.dropped
    summary.stages = times.percentiles()
    summary.problems = list(group.errors)
    if trackers is not None:
        summary.tracks = trackers.ids_issued


def run_pipeline(model: ExportedModel, sources: Sequence[Source], options: RunOptions,
                 say_err: Say = lambda m: print(m, file=sys.stderr), live: LiveView | None = None) -> RunSummary:
    """Run opened ``sources`` through ``model`` into the outputs of ``options`` (and ``live``, the
    live view, when given); returns the summary."""
    batch = max(1, options.batch)
    summary = RunSummary(model=str(model.backend.path.name), task=model.task, backend=model.backend.name,
                         providers=list(model.backend.providers), batch=batch,
                         sources=[s.describe() for s in sources], raw=model.raw)
    group = CaptureGroup(sources, drop=options.drop, batch=batch, prepare=model.prepare)
    stop = threading.Event()
    times = StageTimes()
    try:
        trackers = SourceTrackers(tracker_config(options.track_conf)) if options.track else None
        outputs = _Outputs(options, sources)
    except BaseException:
        for source in sources:
            source.close()
        raise
    progress = _progress_bar(sources, options.max_frames, options.progress)
    writer = _Writer(outputs, times, progress, stop, maxsize=2 * batch + 2, live=live)
    writer.start()
    start = writer.started = time.perf_counter()
    if live is not None:
        def so_far() -> dict[str, Any]:  # on a client's thread: a copy, while this thread counts on
            containers = {k: type(v)(v) for k, v in vars(summary).items() if isinstance(v, (dict, list))}
            now = dataclasses.replace(summary, seconds=time.perf_counter() - start, **containers)
            _tally(now, sources, group, times, trackers)
            return now.to_dict()

        live.summary = so_far
        say_err(f"live view at {live.url}")  # once every route has its full answer
    failure: BaseException | None = None
    try:
        with _stop_on_signals(stop, say_err) as stopped:
            for result in model.process(group, batch=batch, max_frames=options.max_frames, times=times, stop=stop):
                summary.processed += 1
                summary.detections += len(result)
                if result.masks is not None:
                    _count_instances(summary, result)
                if trackers is not None:  # on this thread, so each source's frames come in order
                    t0 = time.perf_counter()
                    trackers(result)
                    times.add("track", (time.perf_counter() - t0) * 1e3)
                writer.put(result)
            summary.stopped_by = stopped.get("by")
    except BaseException as e:
        failure = e
        raise
    finally:
        writer.put(None)
        writer.join()
        summary.seconds = time.perf_counter() - start
        if progress is not None:
            progress.close()
        summary.outputs = outputs.close(failure or writer.error)
        _tally(summary, sources, group, times, trackers)
    error = writer.error or outputs.error
    if error is not None:
        explained = outputs.explain(error)
        if explained is error:
            raise error
        raise explained from None
    if outputs.quit and summary.stopped_by is None:
        summary.stopped_by = "the window"
    if live is not None:
        live.finish(summary.to_dict())
    return summary


@contextlib.contextmanager
def _warnings_as_lines(say_err: Say) -> Iterator[None]:
    """Show edgedet's warnings as ``warning: ...`` lines, others as Python shows them."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ProviderWarning):
            say_err(f"warning: {message}")
        else:
            original(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ProviderWarning)
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original


def _check_outputs(options: RunOptions) -> None:
    if options.save is not None:
        suffix = options.save.suffix.lower()
        if suffix not in VIDEO_FOURCC and suffix not in IMAGE_SUFFIXES:
            raise OutputError(f"--save {options.save}: give a video ({', '.join(VIDEO_FOURCC)}) "
                              f"or an image ({', '.join(IMAGE_SUFFIXES[:4])}, ...) path")
    if options.save_json is not None and options.save is not None and \
            options.save_json.resolve() == options.save.resolve():
        raise OutputError("--save and --save-json name the same file")
    for path in (options.save, options.save_json):  # unwritable: fail before opening anything
        if path is not None and not (path.exists() and not path.is_file()):  # FIFOs are written as they are
            check_writable_file(path)


def run(model_path: str | Path, source: str, options: RunOptions, *, backend: str = "auto",
        providers: str = "auto", threads: int | None = None, spinning: str = DEFAULT_SPINNING,
        say: Say = print,
        say_err: Say = lambda m: print(m, file=sys.stderr)) -> RunSummary:
    """Everything ``edgedet run`` does, in the order that fails fastest on a user's mistake:
    the graph's metadata, the display and output paths, the sources, then the backend."""
    quiet_video_logs()
    metadata = read_metadata(model_path)
    if options.track:
        check_trackable(metadata, model_path)
        assignment_solver()  # scipy is there
    if options.show:
        check_display()
    _check_outputs(options)
    live = LiveView(*options.serve) if options.serve is not None else None  # a port in use fails here
    try:
        sources = open_sources(source, vid_stride=options.vid_stride, open_timeout=options.open_timeout,
                               reconnect_attempts=options.reconnect_attempts,
                               warn=lambda message: say_err(f"warning: {message}"))
        try:
            with _warnings_as_lines(say_err):
                model = load_model(model_path, backend=backend, providers=providers, conf=options.conf,
                                   threads=threads, batch=options.batch, spinning=spinning)
        except BaseException:
            for s in sources:
                s.close()
            raise
        nms_conf = model.nms_conf
        if options.conf is not None and nms_conf is not None and options.conf < nms_conf:
            say_err(f"warning: the graph's NMS keeps scores >= {nms_conf:g}; --conf {options.conf:g} cannot "
                    f"bring back lower ones (re-export with --conf)")
        if model.raw:
            say_err("note: this graph has no NMS (--no-nms): boxes are unsuppressed candidates above "
                    f"{0.25 if options.conf is None else options.conf:g}, overlapping ones included")
        try:
            summary = run_pipeline(model, sources, options, say_err, live=live)
        finally:
            model.close()
        for problem in summary.problems:
            say_err(f"warning: {problem}")
        if summary.processed == 0 and summary.stopped_by is None:
            raise SourceError(f"{source}: no frames could be read"
                              + (f" ({summary.corrupt} corrupt)" if summary.corrupt else ""))
        for line in summary.lines():
            say(line)
        if live is not None and options.serve_linger and summary.stopped_by is None:
            say_err(f"the run ended; still serving its last frame and summary at {live.url} until Ctrl-C")
            wait_until_interrupted()
        return summary
    finally:
        if live is not None:
            live.close()
