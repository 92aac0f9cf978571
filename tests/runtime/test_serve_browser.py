"""The live view in a real browser: headless Chromium loads the page, renders the stream, and the
numbers on the page follow the run. Skipped where no Chromium is installed (``.ci/run`` installs
Debian's ``chromium``)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess

import cv2
import pytest

from tests.runtime.test_serve import LiveRun

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1000, 700


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip(f"no Chromium found on PATH (looked for {', '.join(BROWSERS)}); install Debian's chromium package")


def headless(browser: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={WIDTH},{HEIGHT}", *args], capture_output=True, timeout=timeout)


def page_numbers(dom: str) -> tuple[int, float, str]:
    """The frame counter, FPS and run state the page shows."""
    found = {key: re.search(rf'id="{key}"[^>]*>([^<]*)<', dom) for key in ("processed", "fps", "state")}
    assert all(found.values()), dom[:2000]
    return int(found["processed"].group(1)), float(found["fps"].group(1)), found["state"].group(1)


def test_page_shows_the_stream_and_live_numbers(chromium, graphs, mjpeg_server, tmp_path):
    camera = mjpeg_server(interval=0.03, max_seconds=180)
    run = LiveRun("--model", str(graphs("yolov3-tiny")), "--source", camera.url, "--timeout", "5")
    try:
        run.wait_json("/api/summary", lambda s: s["processed"] >= 1)
        shot = tmp_path / "page.png"
        # --timeout: the screenshot is taken that long after loading starts (the stream never ends).
        result = headless(chromium, f"--screenshot={shot}", "--timeout=4000", run.url)
        assert shot.is_file(), result.stderr.decode(errors="replace")[-2000:]
        dumps = []
        for _ in range(2):  # the page as its script left it, twice, a few seconds apart
            result = headless(chromium, "--dump-dom", "--virtual-time-budget=2000", run.url)
            dumps.append(page_numbers(result.stdout.decode(errors="replace")))
    finally:
        returncode, _, stderr = run.stop(signal.SIGINT)
    assert returncode == 130, stderr

    image = cv2.imread(str(shot))
    assert image.shape[:2] == (HEIGHT, WIDTH)
    page_background = image[HEIGHT - 30:, :300]  # bottom left: nothing but the page's background
    assert page_background.std() < 3
    # The stream image sits at the top left, under the header, as wide as the page allows; the test
    # scene is noise under coloured boxes, which no page element looks like.
    stream = image[80:300, 20:580]
    assert stream.std() > 40, "the stream image did not render"

    (first, fps1, state1), (second, fps2, state2) = dumps
    assert state1 == state2 == "running"
    assert 0 < first < second  # the counter follows the run
    assert fps1 > 0 and fps2 > 0
