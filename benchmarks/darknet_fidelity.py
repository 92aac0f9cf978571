"""Darknet fidelity: edgedet's yolov3 / yolov3-tiny + decoder against OpenCV's darknet importer.

For each model: random weights with realistic BatchNorm statistics (calibrated on the photo, so
activations neither explode nor vanish through the network and objectness and class probabilities
spread over 0..1), written with ``save_darknet_weights``; then the same 416x416 blob
of a real photo goes through our model + ``YoloDecoder`` and through
``cv2.dnn.readNetFromDarknet(official cfg, our .weights)``. Boxes, objectness and class scores
must agree to 1e-3; the maxima go to ``benchmarks/results/darknet_fidelity.md``.

OpenCV's yolo layer (``modules/dnn/src/layers/region_layer.cpp``) returns one ``[H*W*A, 5 + C]``
table per yolo layer, rows ordered ``(y, x, anchor)``: ``cx, cy, w, h`` normalised by the grid /
input size, objectness, and ``objectness * class probability`` set to 0 unless above the layer's
``thresh`` (default 0.2); with ``nms_threshold`` > 0 (default 0.4) it also zeroes class scores of
boxes its per-class NMS suppresses. For the full comparison the cfg is copied with ``thresh=0`` and
``nms_threshold=0`` added to each ``[yolo]`` section; the unmodified cfg is run as well and its
surviving (non-zero) class scores are checked. OpenCV's Winograd 3x3 convolutions are switched off:
they add float32 error of their own (up to about 5e-4 here with them on, still within tolerance),
and the point is to compare the networks, not convolution algorithms.

OpenCV 5 no longer has the darknet importer, so run this with OpenCV 4 shadowing it::

    python -m venv --system-site-packages /tmp/cv4
    /tmp/cv4/bin/pip install "opencv-python-headless<5"
    /tmp/cv4/bin/python benchmarks/darknet_fidelity.py            # from the repository root

Options: ``--cfg-dir`` (darknet's cfgs and photos, default ``../shared/reference/darknet`` beside
the repository), ``--image`` (default ``dog.jpg`` there), ``--calib-image`` (default: the
image itself; a random network calibrated on one photo drifts far on another, its activations
growing with depth, which would saturate every probability), ``--out`` (the markdown table), ``--seed``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgedet.bench import cpu_name  # noqa: E402
from edgedet.models import create_decoder, create_model  # noqa: E402
from edgedet.models.darknet import save_darknet_weights  # noqa: E402
from edgedet.models.layers import ConvBNAct  # noqa: E402

TOLERANCE = 1e-3
CFG_FILES = {"yolov3": "yolov3.cfg", "yolov3-tiny": "yolov3-tiny.cfg"}


def _cv2():
    import cv2

    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromDarknet"):
        sys.exit(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromDarknet; run this script with "
                 "OpenCV 4 (see the module docstring)")
    return cv2


def make_blob(cv2, image: Path, size: int) -> np.ndarray:
    """Darknet's usual input: RGB, 0..1, resized to ``size`` x ``size``; ``[1, 3, size, size]``."""
    bgr = cv2.imread(str(image))
    if bgr is None:
        sys.exit(f"cannot read image {image}")
    return cv2.dnn.blobFromImage(bgr, 1 / 255.0, (size, size), swapRB=True, crop=False)


@torch.no_grad()
def randomize(model: torch.nn.Module, calib: torch.Tensor, gen: torch.Generator) -> None:
    """Random weights whose BN statistics match the activations a real photo produces.

    Conv weights keep torch's init; gamma and beta are drawn around 1 and 0. Each BN's running
    mean/var is set, just before it runs, to its input's per-channel statistics on ``calib``,
    perturbed by a few percent as trained statistics are. The prediction convs are rescaled so
    their raw outputs have a chosen spread: box offsets around 0, objectness and class logits
    centred low with a wide spread, so the probabilities cover 0..1.
    """
    model.eval()
    bns = [m[1] for m in model.modules() if isinstance(m, ConvBNAct)]
    for bn in bns:
        bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.6, 1.4, generator=gen))
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.2)

    def calibrate(bn, args):
        x = args[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        std = var.sqrt()
        bn.running_mean.copy_(mean + 0.05 * std * torch.randn(mean.shape, generator=gen))
        bn.running_var.copy_(var * torch.empty_like(var).uniform_(0.9, 1.1, generator=gen))

    hooks = [bn.register_forward_pre_hook(calibrate) for bn in bns]
    preds = [m for m in model.darknet_convs() if isinstance(m, torch.nn.Conv2d)]
    raw = {}
    hooks += [p.register_forward_hook(lambda mod, _, out: raw.__setitem__(mod, out)) for p in preds]
    model(calib)
    for h in hooks:
        h.remove()

    num_anchors = model.anchors.shape[1]
    # (spread, centre) of the raw outputs per channel kind: tx, ty, tw, th, objectness, classes.
    spread = torch.tensor([1.5, 1.5, 0.5, 0.5, 2.5] + [2.5] * model.cfg.num_classes)
    centre = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0] + [-1.5] * model.cfg.num_classes)
    for pred in preds:
        out = raw[pred]
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3)).clamp_min(1e-6)
        scale = spread.repeat(num_anchors) / std
        jitter = 0.3 * torch.randn(mean.shape, generator=gen)
        pred.weight.mul_(scale.view(-1, 1, 1, 1))
        pred.bias.copy_((pred.bias - mean) * scale + centre.repeat(num_anchors) + jitter)


def opencv_cfg(src: Path, dst: Path, thresh_off: bool) -> Path:
    """A copy of darknet's cfg; with ``thresh_off`` its yolo layers keep every score, no NMS."""
    lines = []
    for line in src.read_text().splitlines():
        lines.append(line)
        if thresh_off and line.strip() == "[yolo]":
            lines += ["thresh=0", "nms_threshold=0"]
    dst.write_text("\n".join(lines) + "\n")
    return dst


def run_opencv(cv2, cfg: Path, weights: Path, blob: np.ndarray) -> list[np.ndarray]:
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableWinograd(False)
    net.setInput(blob)
    return [np.asarray(o) for o in net.forward(net.getUnconnectedOutLayersNames())]


def ours_as_opencv(decoded: torch.Tensor, outputs: list[torch.Tensor], size: int) -> list[np.ndarray]:
    """Our ``[1, N, 5 + C]`` rows ``(anchor, y, x)`` in pixels -> OpenCV's per-layer tables."""
    tables, start = [], 0
    for head in outputs:
        _, channels, h, w = head.shape
        no = decoded.shape[-1]
        a = channels // no
        t = decoded[0, start:start + a * h * w].reshape(a, h, w, no).permute(1, 2, 0, 3).reshape(-1, no)
        start += a * h * w
        t = t.clone()
        t[:, :4] /= size  # pixels -> fractions of the (square) input
        t[:, 5:] *= t[:, 4:5]  # OpenCV reports objectness * class probability
        tables.append(t.numpy())
    return tables


@dataclass
class Result:
    model: str
    rows: int
    box_xy: float
    box_wh: float
    objectness: float
    class_score: float
    default_cfg_scores: float
    default_cfg_kept: int
    torch_vs_f64: float
    opencv_vs_f64: float
    obj_quantiles: tuple[float, float, float]
    score_quantiles: tuple[float, float, float]

    @property
    def worst(self) -> float:
        return max(self.box_xy, self.box_wh, self.objectness, self.class_score, self.default_cfg_scores)


def compare(cv2, name: str, cfg_dir: Path, image: Path, calib_image: Path, seed: int,
            size: int = 416) -> Result:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = create_model(name).eval()
    randomize(model, torch.from_numpy(make_blob(cv2, calib_image, size)), gen)
    blob = make_blob(cv2, image, size)
    with torch.no_grad():
        outputs = model(torch.from_numpy(blob))
        ours = ours_as_opencv(create_decoder(model)(outputs), outputs, size)
        # float64 run of the same weights: tells float32 rounding apart from a real difference.
        model64 = copy.deepcopy(model).double()
        outputs64 = model64(torch.from_numpy(blob).double())
        exact = np.concatenate(ours_as_opencv(create_decoder(model64)(outputs64), outputs64, size))

    with tempfile.TemporaryDirectory() as tmp:
        weights = save_darknet_weights(model, Path(tmp) / f"{name}.weights")
        src = cfg_dir / CFG_FILES[name]
        theirs = run_opencv(cv2, opencv_cfg(src, Path(tmp) / "all.cfg", True), weights, blob)
        theirs_default = run_opencv(cv2, opencv_cfg(src, Path(tmp) / "default.cfg", False), weights, blob)

    assert [t.shape for t in theirs] == [o.shape for o in ours], ([t.shape for t in theirs],
                                                                  [o.shape for o in ours])
    mine, cv = np.concatenate(ours), np.concatenate(theirs)
    cv_default = np.concatenate(theirs_default)
    diff = np.abs(mine - cv)
    kept = cv_default[:, 5:] > 0  # scores OpenCV's default thresh and NMS let through
    default_diff = float(np.abs(mine[:, 5:][kept] - cv_default[:, 5:][kept]).max(initial=0.0))
    default_diff = max(default_diff, float(np.abs(mine[:, :5] - cv_default[:, :5]).max()))
    q = (0.05, 0.5, 0.95)
    return Result(
        model=name, rows=len(mine),
        torch_vs_f64=float(np.abs(mine - exact).max()), opencv_vs_f64=float(np.abs(cv - exact).max()),
        box_xy=float(diff[:, 0:2].max()), box_wh=float(diff[:, 2:4].max()),
        objectness=float(diff[:, 4].max()), class_score=float(diff[:, 5:].max()),
        default_cfg_scores=default_diff, default_cfg_kept=int(kept.sum()),
        obj_quantiles=tuple(float(v) for v in np.quantile(mine[:, 4], q)),
        score_quantiles=tuple(float(v) for v in np.quantile(mine[:, 5:], q)),
    )



def markdown(results: list[Result], cv_version: str, image: str, calib: str, seed: int) -> str:
    lines = [
        "# Darknet fidelity",
        "",
        "edgedet's model + `YoloDecoder` vs OpenCV's `readNetFromDarknet` (official cfg, our",
        "`save_darknet_weights` file, OpenCV CPU backend, Winograd off) on one photo resized to",
        "416x416, random weights with BN statistics calibrated on that photo. Max absolute",
        "difference over every row; boxes as fractions of the input, class score = objectness x",
        "class probability (OpenCV's convention). Produced by `benchmarks/darknet_fidelity.py`.",
        "",
        f"- OpenCV {cv_version}, torch {torch.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- CPU: {cpu_name()}",
        f"- image: {image} (BN calibration: {calib}), seed {seed}, tolerance {TOLERANCE:g}",
        "",
        "| model | rows | cx, cy | w, h | objectness | class score | default cfg (kept scores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.model} | {r.rows} | {r.box_xy:.2e} | {r.box_wh:.2e} | {r.objectness:.2e} "
                     f"| {r.class_score:.2e} | {r.default_cfg_scores:.2e} ({r.default_cfg_kept}) |")
    lines += [
        "",
        "The residual is float32 rounding on both sides: each against a float64 run of our model",
        "with the same weights (max over all columns):",
        "",
        "| model | torch float32 vs float64 | OpenCV vs float64 |",
        "|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.model} | {r.torch_vs_f64:.2e} | {r.opencv_vs_f64:.2e} |")
    lines += [
        "",
        "Spread of our outputs (5th / 50th / 95th percentile), to show the comparison is not of",
        "saturated values:",
        "",
        "| model | objectness | class score |",
        "|---|---|---|",
    ]
    for r in results:
        o, s = r.obj_quantiles, r.score_quantiles
        lines.append(f"| {r.model} | {o[0]:.3f} / {o[1]:.3f} / {o[2]:.3f} "
                     f"| {s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f} |")
    lines += [
        "",
        "\"default cfg\": the unmodified cfg, whose yolo layers zero scores at or below 0.2 and run",
        "per-class NMS; compared are boxes, objectness and the scores OpenCV keeps (their count in",
        "brackets). The other columns use the cfg with `thresh=0` and `nms_threshold=0`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    default_dir = REPO.parent / "shared" / "reference" / "darknet"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-dir", type=Path, default=default_dir)
    parser.add_argument("--image", type=Path, default=None, help="default: CFG_DIR/dog.jpg")
    parser.add_argument("--calib-image", type=Path, default=None, help="default: the image")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "darknet_fidelity.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cv2 = _cv2()
    image = args.image or args.cfg_dir / "dog.jpg"
    calib = args.calib_image or image

    results = []
    for name in CFG_FILES:
        r = compare(cv2, name, args.cfg_dir, image, calib, args.seed)
        results.append(r)
        print(f"{name}: rows {r.rows}, max |diff| cx,cy {r.box_xy:.2e}, w,h {r.box_wh:.2e}, "
              f"objectness {r.objectness:.2e}, class score {r.class_score:.2e}, "
              f"default cfg {r.default_cfg_scores:.2e} ({r.default_cfg_kept} kept); vs float64: "
              f"torch {r.torch_vs_f64:.2e}, OpenCV {r.opencv_vs_f64:.2e}")
    text = markdown(results, cv2.__version__, image.name, calib.name, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    failed = [r.model for r in results if not r.worst <= TOLERANCE]
    if failed:
        print(f"FAIL: {', '.join(failed)} differ from OpenCV by more than {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
