"""Where frames come from: cameras, video files, images, network streams, and lists of them.

A source spec is one of ``camera0`` / ``camera1`` / a bare index ``0``, a video file, an image
file, a folder or glob of images, an ``rtsp://`` / ``rtmp://`` / ``http(s)://`` stream OpenCV can
open (MJPEG, HLS, ...), or a ``.txt`` file listing any of these, one per line.

Each source is read on its own thread into a bounded queue (:class:`CaptureGroup`). Live sources
(cameras, streams) keep the newest frames and count what they drop, so inference always sees the
present; files never drop. Network streams that stall or end reconnect with backoff; a corrupt
frame is skipped and counted. Opening is bounded in time: a camera, stream or video file that
does not open is a :class:`SourceError`, never a hang, and a FIFO or socket is refused up front.

One module per idea: ``base`` (frames, the source interface, the image decoder), ``images``,
``video`` (cameras, files, streams), ``capture`` (reading several at once), ``spec`` (from a spec
to sources).
"""

from edgedet.runtime.sources.base import (IMAGE_SUFFIXES, STREAM_SCHEMES, VIDEO_SUFFIXES, Frame, Source, SourceError,
                                          read_image)
from edgedet.runtime.sources.capture import CaptureGroup
from edgedet.runtime.sources.images import ImageSource
from edgedet.runtime.sources.spec import open_sources, parse_source, quiet_video_logs
from edgedet.runtime.sources.video import VideoSource, wait_unless_stopped

__all__ = ["SourceError", "Frame", "Source", "ImageSource", "VideoSource", "CaptureGroup", "open_sources",
           "parse_source", "read_image", "quiet_video_logs", "wait_unless_stopped", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES",
           "STREAM_SCHEMES"]
