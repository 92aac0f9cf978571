"""Sources: spec parsing, files, image folders, a live MJPEG stream, drops, reconnects, failures.

Nothing here measures time: a slow consumer is one that takes no frame until the group's counters
say the readers got ahead, and reconnect backoff is checked as the delays the source asks its
``wait`` hook for.
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from edgedet.runtime.sources import (CaptureGroup, ImageSource, SourceError, VideoSource, open_sources,
                                     parse_source, read_image)
from tests.runtime.conftest import write_oversized_png, write_video


def drain(group: CaptureGroup, n: int = 1) -> list:
    """Every frame ``group`` gives, ``n`` at a time, until its sources end; then closes it."""
    frames = []
    group.start()
    try:
        while (got := group.get(n, timeout=30)) is not None:
            assert got, "no frame and no end of the sources within 30 s"
            frames += got
    finally:
        group.close()
    return frames


class RecordedWaits(list):
    """A backoff ``wait`` hook that returns at once and keeps the delays it was asked for."""

    def __call__(self, seconds: float, stop: threading.Event | None) -> bool:
        self.append(seconds)
        return stop is not None and stop.is_set()


class SteppingClock:
    """A ``clock`` hook that moves ``step`` seconds per call: with a large step every connection
    has delivered frames "for longer than the read timeout" by its first frame (healthy); with
    ``step=0`` none ever does."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("spec, index", [("camera0", 0), ("camera1", 1), ("0", 0), ("3", 3)])
def test_camera_specs(spec, index):
    (source,) = parse_source(spec)
    assert isinstance(source, VideoSource) and source.kind == "camera" and source.target == index
    assert source.live


@pytest.mark.parametrize("url", ["rtsp://10.0.0.2:554/stream1", "http://cam.local/video.mjpg", "https://x/y.m3u8"])
def test_stream_specs(url):
    (source,) = parse_source(url)
    assert source.kind == "stream" and source.live and source.name == url


def test_folder_glob_and_txt_list(image_folder, video, tmp_path):
    (folder,) = parse_source(str(image_folder))
    assert isinstance(folder, ImageSource) and [p.name for p in folder.paths] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    (matched,) = parse_source(str(image_folder / "img[01].jpg"))
    assert len(matched.paths) == 2
    listing = tmp_path / "list.txt"
    listing.write_text(f"# cameras and files\n{video}\n\nimages/img2.jpg\ncamera1\n")
    kinds = [(s.kind, s.name) for s in parse_source(str(listing))]
    assert kinds == [("video", str(video)), ("images", str(tmp_path / "images" / "img2.jpg")), ("camera", "camera1")]


@pytest.mark.parametrize("spec, fragment", [("nothing/here.mp4", "does not exist"), ("nope*.jpg", "no images match")])
def test_missing_sources_are_user_errors(tmp_path, spec, fragment):
    with pytest.raises(SourceError, match=fragment):
        parse_source(str(tmp_path / spec))


def test_empty_folder_and_unreadable_files(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        parse_source(str(tmp_path))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(SourceError, match="not a readable video"):
        open_sources(str(junk))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SourceError, match="not a readable image"):
        open_sources(str(broken))


def test_missing_camera_is_a_user_error():
    with pytest.raises(SourceError, match="no camera at index 63"):
        open_sources("camera63", open_timeout=5)


def test_camera_that_hangs_while_opening_is_given_up(monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def hanging_capture(index):  # a driver that never returns from open
        entered.set()
        release.wait(30)

    monkeypatch.setattr(cv2, "VideoCapture", hanging_capture)
    try:
        with pytest.raises(SourceError, match="camera7: did not open within 0.1 s"):
            open_sources("camera7", open_timeout=0.1)
        assert entered.is_set()
    finally:
        release.set()


def test_video_file_gives_every_frame_in_order(video):
    (source,) = open_sources(str(video))
    assert source.length == 12 and source.fps == pytest.approx(10) and source.frame_size == (320, 240)
    group = CaptureGroup([source], batch=2).start()
    # A consumer that is behind: it takes nothing until the reader has filled its queue
    # (2 * batch + 2 frames) and waits for room. A file never drops.
    assert group.wait_until(lambda: group.waits > 0, timeout=30)
    assert group.queued == 6
    frames = drain(group, n=2)
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert source.frames_read == 12 and source.corrupt == 0 and group.dropped == 0
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8


def test_vid_stride_keeps_every_nth_frame(video):
    (source,) = open_sources(str(video), vid_stride=5)
    assert source.length == 3
    assert [f.index for f in drain(CaptureGroup([source]))] == [0, 5, 10]


def test_corrupt_image_in_folder_is_skipped_and_counted(image_folder):
    (image_folder / "img1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (source,) = open_sources(str(image_folder))
    frames = drain(CaptureGroup([source]))
    assert [f.source.rsplit("/", 1)[-1] for f in frames] == ["img0.jpg", "img2.jpg"]
    assert source.corrupt == 1 and source.frames_read == 2


def test_oversized_image_in_folder_is_skipped_and_counted(image_folder):
    # The header declares 60000x60000 pixels: OpenCV refuses to decode it (cv2.error). That is
    # one corrupt frame; the images after it are still read.
    write_oversized_png(image_folder / "img05.png")
    (source,) = open_sources(str(image_folder))
    frames = drain(CaptureGroup([source]))
    assert [f.source.rsplit("/", 1)[-1] for f in frames] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert source.corrupt == 1 and source.frames_read == 3


def test_oversized_image_as_the_source_is_a_user_error(tmp_path):
    path = write_oversized_png(tmp_path / "huge.png")
    assert read_image(path) is None  # the one decoder never raises
    with pytest.raises(SourceError, match="huge.png: not a readable image"):
        open_sources(str(path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["clip.mp4", "frame.jpg", "list.txt"])
def test_fifo_named_like_a_source_is_refused_up_front(tmp_path, name):
    # Opening a FIFO blocks until a writer appears; it must never be opened.
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match=rf"{name} is not a regular file \(a FIFO\)"):
        open_sources(str(fifo))
    assert read_image(fifo) is None


def test_video_file_that_hangs_while_opening_is_given_up(monkeypatch, video):
    entered, release = threading.Event(), threading.Event()

    def hanging_capture(*args):  # a demuxer stuck probing the file
        entered.set()
        release.wait(30)

    monkeypatch.setattr(cv2, "VideoCapture", hanging_capture)
    try:
        with pytest.raises(SourceError, match="clip.mp4: did not open within 0.1 s"):
            open_sources(str(video), open_timeout=0.1)
        assert entered.is_set()
    finally:
        release.set()


def test_several_sources_are_read_round_robin(video, image_folder):
    sources = open_sources([str(video), str(image_folder)])
    group = CaptureGroup(sources).start()
    # Both queues filled before anything is taken: the video's 4 (2 * batch + 2), all 3 images.
    assert group.wait_until(lambda: group.queued == 7, timeout=30)
    first = group.get(6)
    assert [f.source_id for f in first] == [0, 1, 0, 1, 0, 1]
    assert len(first) + len(drain(group)) == 15


def test_mjpeg_stream_opens_and_reads(mjpeg_server):
    server = mjpeg_server(frames_per_connection=8)
    (source,) = open_sources(server.url, open_timeout=3, reconnect_attempts=0)
    assert source.live and source.frame_size == (160, 120)
    frames = drain(CaptureGroup([source], drop=False))
    assert len(frames) == 8 and [f.index for f in frames] == list(range(8))
    assert all(f.timestamp > 1e9 for f in frames)  # wall-clock time for live sources


def test_live_source_keeps_the_newest_frames_and_counts_drops(mjpeg_server):
    server = mjpeg_server(frames_per_connection=40, interval=0.005)
    (source,) = open_sources(server.url, open_timeout=3, reconnect_attempts=0)
    group = CaptureGroup([source], batch=2).start()
    # A consumer that takes nothing until the stream has ended (40 frames or the end, whichever
    # comes first: a dropping source queues only ``batch`` frames, so the end).
    frames = group.get(40, wait_full=True, timeout=30)
    frames += drain(group, n=2)
    assert source.frames_read == 40
    assert [f.index for f in frames] == [38, 39]  # the newest frames are kept, in order
    assert group.dropped == 38


def test_no_drop_delivers_every_live_frame(mjpeg_server):
    server = mjpeg_server(frames_per_connection=30, interval=0.005)
    (source,) = open_sources(server.url, open_timeout=3, reconnect_attempts=0)
    group = CaptureGroup([source], drop=False).start()
    assert group.wait_until(lambda: group.waits > 0, timeout=30)  # the stream got ahead of the consumer
    frames = drain(group)
    assert [f.index for f in frames] == list(range(30)) and group.dropped == 0


@pytest.mark.parametrize("attempts, delays", [(None, [0.5, 1, 2, 4, 8]), (7, [0.5, 1, 2, 4, 8, 8, 8])],
                         ids=["default", "capped"])
def test_lost_stream_backs_off_doubling_then_gives_up(mjpeg_server, attempts, delays):
    # By default (as the README says): five attempts, 0.5 s doubling to at most 8 s.
    server = mjpeg_server(frames_per_connection=3, interval=0.01)
    waits = RecordedWaits()
    options = {} if attempts is None else {"reconnect_attempts": attempts}
    source = VideoSource(server.url, "stream", server.url, open_timeout=2, wait=waits, **options)
    source.open()
    assert [source.read().index for _ in range(3)] == [0, 1, 2]
    server.close()  # nothing listens any more: every reconnect is refused
    assert source.read() is None
    assert waits == delays
    assert source.reconnects == 0 and f"{len(delays)} reconnect attempts failed" in source.error
    source.close()


def test_stream_reconnects_and_a_healthy_connection_starts_the_backoff_again(mjpeg_server):
    # Every connection delivers frames "for longer than the read timeout" (the stepping clock),
    # so each loss after one starts over at the first delay with all attempts.
    server = mjpeg_server(frames_per_connection=4, interval=0.01)
    waits = RecordedWaits()
    source = VideoSource(server.url, "stream", server.url, open_timeout=2, reconnect_attempts=2, backoff=0.05,
                         wait=waits, clock=SteppingClock(100))
    source.open()
    indices = [source.read().index for _ in range(10)]  # 4 + 4 + 2 frames over three connections
    assert indices == sorted(set(indices))
    assert source.reconnects == 2 and server.connections == 3 and waits == [0.05, 0.05]
    server.close()
    while source.read() is not None:
        pass
    assert waits == [0.05, 0.05, 0.05, 0.1]
    assert source.reconnects == 2 and "2 reconnect attempts failed" in source.error
    source.close()


def test_stream_that_stalls_on_every_connection_is_given_up(mjpeg_server):
    # Each connection gives 2 frames, then holds the connection open in silence. Reconnecting
    # works every time, but no connection stays healthy, so the backoff keeps doubling and the
    # source is given up after the five attempts the README promises, with a warning per attempt.
    server = mjpeg_server(frames_per_connection=2, interval=0.01, stall=True)
    waits, warnings = RecordedWaits(), []
    source = VideoSource(server.url, "stream", server.url, open_timeout=0.5, wait=waits, warn=warnings.append,
                         clock=SteppingClock(0))
    source.open()
    while source.read() is not None:
        pass
    assert waits == [0.5, 1, 2, 4, 8]
    assert source.reconnects == 5 and server.connections == 6 and source.frames_read == 12
    assert len(warnings) == 5 and all(server.url in w and "lost after 2 frames" in w for w in warnings)
    assert warnings[-1].endswith("reconnecting in 8 s (attempt 5 of 5)")
    assert "stalled or dropped on every connection" in source.error
    assert "gave up after 5 reconnect attempts" in source.error
    source.close()


def test_stop_during_backoff_ends_the_source_at_once(mjpeg_server):
    server = mjpeg_server(frames_per_connection=2, interval=0.01)
    stop, asked = threading.Event(), []

    def wait(seconds, event):  # the user presses Ctrl-C while the source waits to reconnect
        asked.append(seconds)
        stop.set()
        return event.is_set()

    source = VideoSource(server.url, "stream", server.url, open_timeout=2, wait=wait)
    source.open()
    assert [source.read(stop).index for _ in range(2)] == [0, 1]
    server.close()
    assert source.read(stop) is None
    assert asked == [0.5] and source.error is None  # stopped, not lost
    source.close()


def test_stalled_stream_times_out_and_reconnects(mjpeg_server):
    # The server sends 3 frames, then holds the connection open in silence: the read timeout
    # (open_timeout) ends the read, and the source reconnects.
    server = mjpeg_server(frames_per_connection=3, interval=0.01, stall=True)
    waits = RecordedWaits()
    source = VideoSource(server.url, "stream", server.url, open_timeout=1, reconnect_attempts=2, backoff=0.05,
                         wait=waits)
    source.open()
    indices = [source.read().index for _ in range(5)]
    assert indices[:3] == [0, 1, 2]
    assert source.reconnects == 1 and server.connections == 2 and waits == [0.05]
    source.close()


@pytest.mark.timeout(60)  # a hang fails here rather than at the suite's timeout
def test_stream_that_never_answers_is_a_user_error(silent_port):
    with pytest.raises(SourceError, match="cannot open stream"):
        open_sources(f"http://127.0.0.1:{silent_port}/video.mjpg", open_timeout=1.5)


def test_refused_stream_is_a_user_error():
    with pytest.raises(SourceError, match="cannot open stream"):
        open_sources("http://127.0.0.1:1/video.mjpg", open_timeout=1)


def test_grey_and_odd_videos_give_bgr_frames(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=3, size=(50, 70), fourcc="MJPG")
    (source,) = open_sources(str(path))
    frames = drain(CaptureGroup([source]))
    assert len(frames) == 3 and frames[0].image.shape == (50, 70, 3)
    cv2.imwrite(str(tmp_path / "grey.png"), np.zeros((10, 12), np.uint8))
    (grey,) = open_sources(str(tmp_path / "grey.png"))
    assert grey.read().image.shape == (10, 12, 3)
