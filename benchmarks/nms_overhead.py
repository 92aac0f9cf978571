"""What NMS inside the graph costs: full graph vs raw graph, ONNX Runtime CPU, yolov3-tiny 416.

Exports yolov3-tiny twice from the same weights — with NMS folded in and with ``--no-nms`` (raw
decoded predictions) — and times both in ONNX Runtime's CPU provider at batch 1 and 8 on a real
photo. NMS cost depends on how many candidates pass the score threshold, so two weight sets are
timed:

- ``training init``: edgedet's initialisation (objectness starts near 0.01): almost no
  candidates, like a trained detector on an empty scene;
- ``busy``: BatchNorm calibrated on the photo and prediction biases spread around -2.1: about a
  hundred (box, class) candidates above the 0.25 threshold, a busy street scene's worth;
- ``crowded``: biases around -1: thousands of candidates, far more than a trained detector gives
  (the worst case; edgedet caps NMS input at 3000 boxes per image).

Usage: python benchmarks/nms_overhead.py [--image PHOTO] [--iters 50] [--threads N]
Writes benchmarks/results/nms_overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from edgedet.bench import cpu_name, lively
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.export.onnx import OnnxNMS, export_onnx
from edgedet.models import create_model
from edgedet.runtime.letterbox import letterbox

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "reference" / "darknet" / "dog.jpg"



def time_session(path: Path, x: np.ndarray, iters: int, threads: int) -> list[float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(10):
        session.run(None, {"images": x})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, {"images": x})
        times.append((time.perf_counter() - start) * 1e3)
    return times


def profile_added_nodes(raw: Path, full: Path, x: np.ndarray, runs: int, threads: int) -> tuple[float, float, list]:
    """ONNX Runtime's own per-node profile of both graphs after optimisation: the summed median
    kernel time of the raw graph's nodes, of the nodes only the full graph has (decode's
    neighbours, score product, candidate limit, NonMaxSuppression, gathers), and that second set
    by operator type, largest first."""
    import collections
    import json

    import onnx

    medians: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in (("raw", raw), ("full", full)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / kind)
            options.optimized_model_filepath = str(Path(tmp) / f"{kind}.opt.onnx")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for _ in range(runs + 10):
                session.run(None, {"images": x})
            events = json.loads(Path(session.end_profiling()).read_text())
            per: dict = collections.defaultdict(list)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    per[(e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))].append(e["dur"])
            medians[kind] = {k: statistics.median(v[10:]) for k, v in per.items()}
        raw_nodes = {n.name for n in onnx.load(str(Path(tmp) / "raw.opt.onnx")).graph.node}
    added = {k: v for k, v in medians["full"].items() if k[0] not in raw_nodes}
    by_op: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for (_, op), us in added.items():
        by_op[op] += us
        counts[op] += 1
    return (sum(medians["raw"].values()) / 1e3, sum(added.values()) / 1e3,
            [(op, counts[op], us / 1e3) for op, us in by_op.most_common()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "nms_overhead.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"error: cannot read {args.image}")
    frame, _ = letterbox(image, (416, 416))
    settings = NMSSettings()
    rows = []
    profile = (float("nan"), float("nan"), [])
    with tempfile.TemporaryDirectory() as tmp:
        for weights, bias in (("training init", None), ("busy", -2.1), ("crowded", -1.0)):
            torch.manual_seed(0)
            model = create_model("yolov3-tiny").eval()
            if bias is not None:
                lively(model, frame[None], bias)
            paths = {}
            for kind, nms in (("raw", None), ("nms", settings)):
                module, names = build_deploy_module(model, nms=nms, nms_module=OnnxNMS(settings) if nms else None)
                paths[kind] = export_onnx(module, torch.from_numpy(np.stack([frame, frame])),
                                          Path(tmp) / f"{kind}.onnx", names, {"model": "yolov3-tiny", "task": "detection"},
                                          dynamic_hw=False)
            for batch in (1, 8):
                x = np.ascontiguousarray(np.repeat(frame[None], batch, axis=0))
                session = ort.InferenceSession(str(paths["nms"]), providers=["CPUExecutionProvider"])
                dets = session.run(["num_dets"], {"images": x[:1]})[0][0]
                raw_pred = ort.InferenceSession(str(paths["raw"]), providers=["CPUExecutionProvider"]).run(None, {"images": x[:1]})[0][0]
                candidates = int(((raw_pred[:, 4:5] * raw_pred[:, 5:]) > settings.conf).sum())
                # Interleave the two graphs so drift on a shared machine hits both alike.
                raw_t, nms_t = [], []
                for _ in range(3):
                    raw_t += time_session(paths["raw"], x, args.iters // 3 + 1, args.threads)
                    nms_t += time_session(paths["nms"], x, args.iters // 3 + 1, args.threads)
                raw_p50, nms_p50 = statistics.median(raw_t), statistics.median(nms_t)
                rows.append((weights, batch, candidates, int(dets), raw_p50, nms_p50, (nms_p50 / raw_p50 - 1) * 100))
                if weights == "busy" and batch == 1:
                    profile = profile_added_nodes(paths["raw"], paths["nms"], x, args.iters, args.threads)
                print(f"{weights:13s} batch {batch}: candidates {candidates:5d} dets {int(dets):3d}  raw p50 "
                      f"{raw_p50:7.2f} ms  nms p50 {nms_p50:7.2f} ms  overhead {rows[-1][-1]:+.1f}%", flush=True)
    lines = [
        "# NMS in the graph: overhead over the raw graph",
        "",
        "yolov3-tiny 416x416, ONNX Runtime CPU provider, p50 of "
        f"{args.iters} runs per graph (interleaved), photo `{args.image.name}` letterboxed. "
        "Produced by `benchmarks/nms_overhead.py`.",
        "",
        f"- CPU: {cpu_name()}, {torch.get_num_threads()} torch threads visible; ORT threads: "
        f"{args.threads or 'default'}; machine load (1-minute average) {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (the average counts this script's own threads and whatever ran just "
        "before it)",
        f"- onnxruntime {ort.__version__}, torch {torch.__version__}, Python {platform.python_version()}",
        "",
        "| weights | batch | candidates > conf (image 1) | detections (image 1) | raw p50 ms | full p50 ms | overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for weights, batch, cand, dets, raw_p50, nms_p50, over in rows:
        lines.append(f"| {weights} | {batch} | {cand} | {dets} | {raw_p50:.2f} | {nms_p50:.2f} | {over:+.1f}% |")
    raw_ms, added_ms, by_op = profile
    lines += ["", "Where the added time goes (`busy`, batch 1): ONNX Runtime's per-node profile of both graphs "
              f"after its optimisations, median kernel time over {args.iters} runs. The raw graph's nodes sum to "
              f"{raw_ms:.2f} ms; the {sum(n for _, n, _ in by_op)} nodes only the full graph has sum to "
              f"{added_ms:.3f} ms ({added_ms / raw_ms * 100:.1f} % of the raw graph's kernels). Profiling times "
              "every node, which inflates the many sub-microsecond ones, so this sum can exceed the wall-clock "
              "overhead above: it shows where the added time goes, the table above how much there is.", "",
              "| operator | nodes | kernel ms |", "|---|---:|---:|"]
    lines += [f"| {op} | {n} | {ms:.3f} |" for op, n, ms in by_op]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
