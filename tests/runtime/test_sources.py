"""Sources: spec parsing, files, image folders, a live MJPEG stream, drops, reconnects, failures."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edgedet.runtime.sources import (CaptureGroup, ImageSource, SourceError, VideoSource, open_sources,
                                     parse_source)
from tests.runtime.conftest import write_video


def drain(group: CaptureGroup, n: int = 1, consume_delay: float = 0.0, limit: float = 20.0):
    frames, deadline = [], time.monotonic() + limit
    group.start()
    try:
        while time.monotonic() < deadline:
            got = group.get(n)
            if got is None:
                break
            frames += got
            if got and consume_delay:
                time.sleep(consume_delay)
    finally:
        group.close()
    return frames


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


def test_missing_camera_fails_fast():
    start = time.monotonic()
    with pytest.raises(SourceError, match="no camera at index 63"):
        open_sources("camera63", open_timeout=5)
    assert time.monotonic() - start < 6


def test_video_file_gives_every_frame_in_order(video):
    (source,) = open_sources(str(video))
    assert source.length == 12 and source.fps == pytest.approx(10) and source.frame_size == (320, 240)
    frames = drain(CaptureGroup([source], batch=2), n=2, consume_delay=0.02)  # a slow consumer: files never drop
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert source.frames_read == 12 and source.corrupt == 0
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


def test_several_sources_are_read_round_robin(video, image_folder):
    sources = open_sources([str(video), str(image_folder)])
    group = CaptureGroup(sources).start()
    deadline = time.monotonic() + 10
    while group._ready() < 7 and time.monotonic() < deadline:  # both queues filled (4 + 3)
        time.sleep(0.01)
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
    frames = drain(CaptureGroup([source]), consume_delay=0.05)
    group_dropped = source.frames_read - len(frames)
    assert group_dropped > 0 and len(frames) < 40
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert frames[-1].index == 39  # the newest frame is never the one dropped


def test_no_drop_delivers_every_live_frame(mjpeg_server):
    server = mjpeg_server(frames_per_connection=30, interval=0.005)
    (source,) = open_sources(server.url, open_timeout=3, reconnect_attempts=0)
    group = CaptureGroup([source], drop=False)
    frames = drain(group, consume_delay=0.01)
    assert [f.index for f in frames] == list(range(30)) and group.dropped == 0


def test_stream_reconnects_with_backoff_then_gives_up(mjpeg_server):
    server = mjpeg_server(frames_per_connection=4, interval=0.01)
    source = VideoSource(server.url, "stream", server.url, open_timeout=2, reconnect_attempts=2, backoff=0.05)
    source.open()
    frames = []
    while len(frames) < 10:
        frame = source.read()
        assert frame is not None, source.error
        frames.append(frame)
    assert source.reconnects >= 2 and server.connections >= 3
    server.close()
    start = time.monotonic()
    while source.read() is not None:
        pass
    assert time.monotonic() - start < 10
    assert "reconnect attempts failed" in source.error
    source.close()


def test_stalled_stream_times_out_and_reconnects(mjpeg_server):
    server = mjpeg_server(frames_per_connection=3, interval=0.01, stall=True)
    source = VideoSource(server.url, "stream", server.url, open_timeout=1, reconnect_attempts=2, backoff=0.05)
    source.open()
    start = time.monotonic()
    indices = [source.read().index for _ in range(5)]
    assert source.reconnects == 1 and server.connections == 2
    assert 0.9 < time.monotonic() - start < 8
    assert indices[:3] == [0, 1, 2]
    source.close()


def test_stream_that_never_answers_fails_within_the_timeout(silent_port):
    start = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream"):
        open_sources(f"http://127.0.0.1:{silent_port}/video.mjpg", open_timeout=1.5)
    assert time.monotonic() - start < 6


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
