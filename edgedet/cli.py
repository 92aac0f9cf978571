"""The ``edgedet`` command: one small function per subcommand; the logic lives in the packages.

Torch is imported inside the commands that need it, so the runtime commands work on an edge
device that installed only numpy, OpenCV and ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from edgedet import __version__
from edgedet.errors import EdgedetError, MissingDependencyError
from edgedet.export.options import TRITON_BACKENDS, ExportOptions, NMSSettings
from edgedet.parity.options import ParityOptions
from edgedet.runtime.backends.ort import DEFAULT_SPINNING, SPIN_MODES
from edgedet.runtime.pipeline import RunOptions
from edgedet.train.options import BOX_LOSSES, TrainOptions


def _default(options: type, name: str) -> Any:
    """The default of field ``name`` of an options dataclass: the CLI keeps no second copy."""
    return next(f.default for f in dataclasses.fields(options) if f.name == name)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "this command needs PyTorch, which the runtime-only install leaves out; "
            "install it with: pip install 'edgedet[full]'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgedet")
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Train, export and run detection and segmentation models on the edge."""
    ctx.obj = {"debug": debug}


@cli.command()
def models() -> None:
    """List every registered model with its parameters and GFLOPs at its default input size."""
    _require_torch()
    from edgedet.models.catalog import model_table

    click.echo(model_table())


@cli.group()
def data() -> None:
    """Look at datasets."""


@data.command()
@click.option("--data", "spec", required=True, help="Dataset spec: digits-loc, digits-grid, clutter, "
              "pennfudan:PATH, yolo:PATH, coco:FILE.json (options as NAME:key=value,...).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("preview.png"),
              show_default=True, help="PNG (or JPG) to write.")
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True)
@click.option("-n", "--num", "n", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Number of samples in the grid.")
def preview(spec: str, out: Path, split: str, n: int) -> None:
    """Write a grid of samples with their boxes and masks drawn."""
    from edgedet.data import preview_dataset

    path = preview_dataset(spec, out, n=n, split=split)
    click.echo(f"wrote {path}")


def _parse_imgsz(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter("give N or H,W, e.g. 416 or 384,640") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter("give N or H,W with positive sizes")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


@cli.command()
@click.option("--model", "model_name", required=True, help="Registered model name (see `edgedet models`).")
@click.option("--weights", help="edgedet checkpoint, darknet FILE.weights, or darknet:yolov3 / darknet:yolov3-tiny.")
@click.option("--random-init", is_flag=True, help="Seeded random weights; also writes OUT/NAME.pt as the reference.")
@click.option("--format", "formats", default=",".join(_default(ExportOptions, "formats")), show_default=True,
              help="Comma-separated: onnx, torchscript.")
@click.option("--imgsz", callback=_parse_imgsz, help="Input size N or H,W (default: the model's).")
@click.option("--dynamic", is_flag=True, help="Free height and width too (batch is always dynamic).")
@click.option("--half", is_flag=True, help="fp16 weights and activations; decoding and NMS stay fp32.")
@click.option("--nms/--no-nms", default=True, show_default=True, help="Detectors: NMS in the graph, or raw predictions.")
@click.option("--conf", type=click.FloatRange(0, 1), default=_default(NMSSettings, "conf"), show_default=True,
              help="Score threshold.")
@click.option("--iou", type=click.FloatRange(0, 1), default=_default(NMSSettings, "iou"), show_default=True,
              help="NMS IoU threshold.")
@click.option("--max-det", type=click.IntRange(1, 10000), default=_default(NMSSettings, "max_det"), show_default=True,
              help="Detections per image.")
@click.option("--agnostic", is_flag=True, help="Class-agnostic NMS.")
@click.option("--input", "input_format", type=click.Choice(["uint8", "float"]),
              default=_default(ExportOptions, "input_format"), show_default=True,
              help="uint8 [B,H,W,3] BGR frames, or float32 [B,3,H,W] RGB 0..1.")
@click.option("--probs", is_flag=True, help="Segmenters: also output class probabilities.")
@click.option("--opset", type=int, help="ONNX opset (default 17).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("exported"),
              show_default=True, help="Output directory.")
@click.option("--name", help="File name stem (default: the model name).")
@click.option("--int8", is_flag=True, help="Also write NAME.int8.onnx, statically quantised (ONNX Runtime).")
@click.option("--calib-data", help="Dataset spec of the int8 calibration frames (default: the model's dataset).")
@click.option("--calib-samples", type=click.IntRange(1, 100000), default=_default(ExportOptions, "calib_samples"),
              show_default=True,
              help="Calibration frames for --int8.")
@click.option("--triton", "triton", type=click.Path(file_okay=False), help="Also write a Triton model repository here.")
@click.option("--triton-backend", type=click.Choice(TRITON_BACKENDS), default=_default(ExportOptions, "triton_backend"),
              show_default=True, help="The --triton repository's backend: Triton's ONNX Runtime backend, or python "
              "(a model.py running the graph with onnxruntime; the server bundled with nvidia-pytriton).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim graph simplification.")
@click.option("--no-check", is_flag=True, help="Skip running the written files against PyTorch.")
@click.option("--fully-conv", is_flag=True, help="Turn the localizer's Linear head into convolutions: a detector "
              "over frames of any size >= its input (dynamic H, W; --imgsz: the frame size, default 240,320).")
def export(model_name: str, weights: str | None, random_init: bool, formats: str, imgsz, dynamic: bool,
           half: bool, nms: bool, conf: float, iou: float, max_det: int, agnostic: bool, input_format: str,
           probs: bool, opset: int | None, out_dir: Path, name: str | None, int8: bool, calib_data: str | None,
           calib_samples: int, triton: str | None, triton_backend: str, no_simplify: bool, no_check: bool,
           fully_conv: bool) -> None:
    """Export a model to ONNX and TorchScript with preprocessing, decoding and NMS in the graph."""
    _require_torch()
    from edgedet.export.api import export_model

    options = ExportOptions(
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()), imgsz=imgsz, dynamic=dynamic,
        half=half, nms=NMSSettings(conf=conf, iou=iou, max_det=max_det, agnostic=agnostic) if nms else None,
        input_format=input_format, opset=opset, probs=probs, simplify=not no_simplify, check=not no_check,
        name=name, triton=triton, triton_backend=triton_backend, int8=int8, calib_data=calib_data,
        calib_samples=calib_samples, fully_conv=fully_conv)
    failed = False
    for f in export_model(model_name, out_dir, options, weights=weights, random_init=random_init,
                          say=lambda m: click.echo(m, err=True)):
        click.echo(f"wrote {f.path} ({f.path.stat().st_size / 1e6:.1f} MB, {f.seconds:.1f} s)")
        for note in f.notes:
            click.echo(f"  {note}")
        if f.check:
            verdict = {True: "PASS", False: "FAIL", None: "SKIPPED"}[f.check_passed]
            click.echo(f"  check {f.format} vs PyTorch, sample + empty scene: {verdict}: {f.check}")
        failed |= f.check_passed is False
    if failed:
        raise EdgedetError("an exported graph does not compute what PyTorch computes (see above)")


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def info(file: Path, as_json: bool) -> None:
    """Show an exported graph's metadata, inputs, outputs, opset and operators."""
    from edgedet.export.info import format_info, graph_info, info_json

    click.echo(info_json(file) if as_json else format_info(graph_info(file)))


def _parse_atol_out(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: give NAME=X, e.g. probs=1e-4") from None
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r}: give NAME=X, e.g. probs=1e-4")
    return out


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--weights", help="Reference weights (default: the source recorded in each file's metadata).")
@click.option("--samples", type=click.IntRange(1, 256), default=_default(ParityOptions, "samples"), show_default=True,
              help="Real samples to try.")
@click.option("--batch", type=click.IntRange(1, 64), default=_default(ParityOptions, "batch"), show_default=True,
              help="Batch size of the real samples.")
@click.option("--providers", help="Only these ONNX Runtime providers: comma-separated cpu, cuda, tensorrt.")
@click.option("--atol", type=float, help="Absolute tolerance of dense outputs (default: the graph precision's: "
              "fp32 1e-5, fp16 1e-2, int8 its own); detection limits stay the precision's.")
@click.option("--rtol", type=float, help="Relative tolerance of dense outputs (default: the graph precision's).")
@click.option("--atol-out", multiple=True, callback=_parse_atol_out, help="Per-output atol, NAME=X (repeatable).")
@click.option("--bf16", is_flag=True, help="Also run OpenVINO in bf16, judged with bf16 tolerances.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the full report here.")
@click.option("-v", "--verbose", is_flag=True, help="Show every output's figures, not only failures.")
def parity(files: tuple[Path, ...], weights: str | None, samples: int, batch: int, providers: str | None,
           atol: float | None, rtol: float | None, atol_out: dict[str, float], bf16: bool, json_path: Path | None,
           verbose: bool) -> None:
    """Check that exported graphs compute what PyTorch computes, on every backend that runs them."""
    _require_torch()
    import json

    from edgedet.parity.runner import format_report, run_parity
    from edgedet.runtime.files import atomic_write_bytes, check_writable_file

    if json_path is not None:
        check_writable_file(json_path)  # fail before the work, not after it
    wanted = [p.strip().lower() for p in providers.split(",") if p.strip()] if providers else None
    if wanted and set(wanted) - {"cpu", "cuda", "tensorrt"}:
        raise click.BadParameter("choose from cpu, cuda, tensorrt", param_hint="--providers")
    options = ParityOptions(weights=weights, samples=samples, batch=batch, providers=wanted, atol=atol, rtol=rtol,
                            atol_out=atol_out, bf16=bf16)
    reports = []
    for file in files:
        report = run_parity([file], options, say=lambda m: click.echo(m, err=True))[0]
        click.echo(format_report(report, verbose))
        reports.append(report)
    if json_path is not None:
        doc = {"passed": all(r.passed for r in reports), "files": [r.to_dict() for r in reports]}
        atomic_write_bytes(json_path, json.dumps(doc, indent=2).encode())
    failed = [r.file for r in reports if not r.passed]
    if failed:
        raise EdgedetError(f"parity failed for {', '.join(failed)}")


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1,8") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{value!r}: give positive integers, e.g. 1,8")
    return values


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--model", "model_name", help="Benchmark a registered model (exported on the fly, random weights).")
@click.option("--backends", default="eager,torchscript,onnxruntime,opencv", show_default=True,
              help="Comma-separated: eager, torchscript, onnxruntime, openvino (f32), openvino-bf16, "
                   "openvino-f16, opencv.")
@click.option("--providers", default="auto", show_default=True, help="ONNX Runtime providers: auto or tensorrt,cuda,cpu.")
@click.option("--batch", "batches", default="1", callback=_int_list, show_default=True, help="Batch sizes, e.g. 1,8.")
@click.option("--imgsz", callback=_parse_imgsz, help="Input size N or H,W (with --model).")
@click.option("--half", is_flag=True, help="fp16 export (with --model).")
@click.option("--warmup", type=click.IntRange(0, 1000), default=5, show_default=True)
@click.option("--iters", type=click.IntRange(1, 100000), default=20, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the records here.")
def bench(files: tuple[Path, ...], model_name: str | None, backends: str, providers: str, batches: tuple[int, ...],
          imgsz, half: bool, warmup: int, iters: int, json_path: Path | None) -> None:
    """Latency, throughput and achieved GFLOP/s per backend, against this machine's float32 MatMul peak."""
    _require_torch()
    import json

    from edgedet.bench import bench_files, bench_model, format_records, records_json
    from edgedet.runtime.files import atomic_write_bytes, check_writable_file

    if json_path is not None:
        check_writable_file(json_path)  # fail before the work, not after it
    if bool(files) == bool(model_name):
        raise click.UsageError("give --model NAME or exported FILE(s), not both and not neither")
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    if model_name:
        rows = bench_model(model_name, chosen, providers, batches, imgsz, half, warmup, iters, say)
    else:
        if imgsz or half:
            raise click.UsageError("--imgsz and --half apply to --model; exported files keep their own")
        rows = bench_files(files, chosen, providers, batches, warmup, iters, say)
    click.echo(format_records(rows))
    if json_path is not None:
        atomic_write_bytes(json_path, json.dumps(records_json(rows), indent=2).encode())
    if not rows:
        raise EdgedetError("no backend could run (see the notes above)")


@cli.command()
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Exported graph: FILE.onnx or FILE.torchscript.")
@click.option("--source", required=True, help="camera0 / 0, a video, an image, a folder or glob of images, "
              "rtsp:// or http(s):// stream, or a .txt list of these.")
@click.option("--providers", default="auto", show_default=True,
              help="ONNX Runtime providers: auto (tensorrt > cuda > cpu, what works) or e.g. cuda,cpu.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino", "openvino-bf16", "openvino-f16",
                                              "torchscript", "opencv"]), default="auto",
              show_default=True, help="auto: onnxruntime for .onnx, torchscript for .torchscript. openvino "
                                      "computes in f32; openvino-bf16 / -f16 in reduced precision, by name only.")
@click.option("--conf", type=click.FloatRange(0, 1), help="Score threshold (default: the graph's NMS threshold).")
@click.option("--batch", type=click.IntRange(1, 256), default=_default(RunOptions, "batch"), show_default=True,
              help="Frames per inference.")
@click.option("--show", is_flag=True, help="Show a window with the results (q or Esc stops).")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path),
              help="Annotated video (OUT.mp4, .avi, .mkv) or image(s) (OUT.jpg).")
@click.option("--save-json", type=click.Path(dir_okay=False, path_type=Path),
              help="One JSON line per processed frame, in source pixels.")
@click.option("--max-frames", type=click.IntRange(1), help="Stop after this many processed frames.")
@click.option("--track", is_flag=True, help="Detectors: follow objects across frames; each detection gets a "
              "track_id (per source), drawn as #id.")
@click.option("--track-conf", type=click.FloatRange(0, 1), help="Tracking (implies --track): detections scoring at "
              "least this start and lead tracks; weaker ones only keep tracks alive  [default: 0.5].")
@click.option("--vid-stride", type=click.IntRange(1), default=_default(RunOptions, "vid_stride"), show_default=True,
              help="Process every N-th frame of videos and streams.")
@click.option("--no-drop", is_flag=True, help="Live sources: queue every frame instead of keeping the newest.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for inference (default: physical cores).")
@click.option("--spinning", type=click.Choice(SPIN_MODES), default=DEFAULT_SPINNING, show_default=True,
              help="ONNX Runtime's idle inference threads: sleep (off), spin only during a run (in-run), or "
                   "always spin (on, ONNX Runtime's own default); see benchmarks/results/pipeline_fps.md.")
@click.option("--timeout", type=click.FloatRange(0.1), default=_default(RunOptions, "open_timeout"), show_default=True,
              help="Seconds to wait for a camera or stream to open, or a stream to send a frame.")
@click.option("--serve", "serve", metavar="HOST:PORT", help="Serve a live view (page, MJPEG stream, JSON) while "
              "running; :PORT or PORT listens on 127.0.0.1.")
@click.option("--serve-linger", is_flag=True, help="With --serve: when the source ends, keep serving the last frame "
              "and the summary until Ctrl-C.")
def run(model_path: Path, source: str, providers: str, backend: str, conf: float | None, batch: int, show: bool,
        save: Path | None, save_json: Path | None, max_frames: int | None, track: bool, track_conf: float | None,
        vid_stride: int, no_drop: bool, threads: int | None, spinning: str, timeout: float, serve: str | None,
        serve_linger: bool) -> None:
    """Run an exported graph on a camera, video, images or a stream; draw, save and summarise."""
    from edgedet.runtime.pipeline import run as run_graph
    from edgedet.runtime.serve import ServeError, parse_bind

    if serve_linger and serve is None:
        raise ServeError("--serve-linger needs --serve HOST:PORT")
    options = RunOptions(batch=batch, conf=conf, max_frames=max_frames, vid_stride=vid_stride,
                         drop=False if no_drop else None, show=show, save=save, save_json=save_json,
                         open_timeout=timeout, track=track or track_conf is not None, track_conf=track_conf,
                         serve=None if serve is None else parse_bind(serve), serve_linger=serve_linger)
    summary = run_graph(model_path, source, options, backend=backend, providers=providers, threads=threads,
                        spinning=spinning, say=click.echo, say_err=lambda m: click.echo(m, err=True))
    if summary.stopped_by in ("SIGINT", "SIGTERM"):
        sys.exit(130 if summary.stopped_by == "SIGINT" else 143)
    if summary.problems:  # a source given up after its reconnect attempts: outputs are finalised
        raise EdgedetError(f"{len(summary.problems)} of {len(summary.sources)} source(s) failed and "
                           f"were given up (see the warnings above); outputs hold what was processed")


def _parse_model_cfg(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    import json

    config = {}
    for item in values:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            config[key.strip()] = json.loads(raw)
        except ValueError:
            config[key.strip()] = raw
    return config


def _parse_floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give comma-separated numbers, e.g. 1,2") from None


@cli.command()
@click.option("--model", "model_name", help="Registered model name (see `edgedet models`).")
@click.option("--data", "spec", help="Dataset spec, e.g. digits-loc, clutter, pennfudan:PATH (see `edgedet data preview`).")
@click.option("--epochs", type=click.IntRange(1),
              help=f"Epochs to train  [default: {_default(TrainOptions, 'epochs')}; with --resume: the run's].")
@click.option("--batch", type=click.IntRange(1), default=_default(TrainOptions, "batch"), show_default=True,
              help="Images per step, over all GPUs.")
@click.option("--imgsz", callback=_parse_imgsz, help="Input size N or H,W (default: the dataset's, else the model's).")
@click.option("--lr", type=float, help="Peak AdamW learning rate (default: per family).")
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--workers", type=click.IntRange(0), help="DataLoader workers (default: 0 for cached data, else up to 8).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory  [default: runs/MODEL].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--exist-ok", is_flag=True, help="Start a new run even if --out holds one.")
@click.option("--weights", help="Initial weights: edgedet checkpoint or darknet weights (tensors that fit).")
@click.option("--patience", type=click.IntRange(0), default=_default(TrainOptions, "patience"), show_default=True,
              help="Stop after this many epochs without a better validation score (0: never).")
@click.option("--amp/--no-amp", default=None, help="Mixed precision (default: on with CUDA).")
@click.option("--seed", type=int, default=_default(TrainOptions, "seed"), show_default=True,
              help="Seed of weights, batch order and augmentation.")
@click.option("--box-loss", type=click.Choice(BOX_LOSSES), default=_default(TrainOptions, "box_loss"), show_default=True,
              help="YOLOv3 box loss.")
@click.option("--class-weights", callback=_parse_floats, help="Segmenters: loss weight per class, background first (e.g. 1,2).")
@click.option("--cache/--no-cache", default=None, help="Keep samples in memory (default: for synthetic sets).")
@click.option("--fresh/--no-fresh", default=None,
              help="Synthetic sets: new training samples every epoch (default: on; validation stays fixed).")
@click.option("--cfg", "model_cfg", multiple=True, callback=_parse_model_cfg,
              help="Model config override KEY=VALUE, repeatable (e.g. --cfg width=0.25).")
@click.option("--val-images", type=click.IntRange(1), help="Validate on the first N validation images (default: all).")
def train(model_name: str | None, spec: str | None, epochs: int | None, batch: int, imgsz, lr: float | None,
          device: str | None, workers: int | None, out_dir: str | None, resume: bool, exist_ok: bool,
          weights: str | None, patience: int, amp: bool | None, seed: int, box_loss: str, class_weights,
          cache: bool | None, fresh: bool | None, model_cfg: dict, val_images: int | None) -> None:
    """Train a model; writes OUT/best.pt, OUT/last.pt, OUT/results.csv and OUT/results.png."""
    # Usage is checked before torch is imported: a missing option is answered at once, exit 2.
    if not resume and not (model_name and spec):
        raise click.UsageError("give --model and --data (or --resume --out DIR to continue a run)")
    if resume and not out_dir and not model_name:
        raise click.UsageError("--resume needs --out DIR (or --model, for the default runs/MODEL)")
    _require_torch()
    from edgedet.models import get_entry
    from edgedet.train.trainer import train as run_training

    if model_name:
        get_entry(model_name)  # unknown model -> one line naming the known ones
    epochs = epochs or (0 if resume else _default(TrainOptions, "epochs"))  # 0: the resumed run's
    options = TrainOptions(
        model=model_name or "", data=spec or "", epochs=epochs, batch=batch, imgsz=imgsz, lr=lr, device=device, workers=workers, out=out_dir or f"runs/{model_name}", weights=weights,
        patience=patience, amp=amp, seed=seed, box_loss=box_loss, class_weights=class_weights, cache=cache,
        fresh=fresh, model_config=model_cfg, val_images=val_images)
    result = run_training(options, resume=resume, exist_ok=exist_ok, say=lambda m: click.echo(m, err=True))
    if result.stopped == "interrupted":
        sys.exit(_interrupt_exit_code())
    if result.rank == 0:
        click.echo(f"best {result.best}  last {result.last}")


@cli.command()
@click.option("--weights", required=True, help="edgedet checkpoint (e.g. runs/localizer/best.pt).")
@click.option("--data", "spec", help="Dataset spec (default: the one the checkpoint was trained on).")
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--batch", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", help="cpu, cuda or cuda:N (default: cuda when available).")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True, help="DataLoader workers.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the metrics here as JSON.")
def val(weights: str, spec: str | None, split: str, batch: int, device: str | None, workers: int,
        json_path: Path | None) -> None:
    """Score a checkpoint: accuracy and IoU, COCO mAP, or the segmentation table."""
    _require_torch()
    import json

    from edgedet.runtime.files import atomic_write_bytes, check_writable_file
    from edgedet.train.validate import validate_checkpoint

    if json_path is not None:
        check_writable_file(json_path)  # fail before the work, not after it
    result, doc = validate_checkpoint(weights, spec, split=split, batch=batch, device=device, workers=workers)
    click.echo(f"{doc['model']} on {doc['data']} ({split}, {doc['images']} images)")
    click.echo(result.report)
    if json_path is not None:
        atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
        click.echo(f"wrote {json_path}")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart"),
              show_default=True, help="Folder for the graphs, videos, plots and report.md.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]: where the runtime and parity run.")
def quickstart(out_dir: Path, device: str) -> None:
    """The main job: export, parity, latency and accuracy of the shipped checkpoints, a video run, a report."""
    _require_torch()
    from edgedet.quickstart import quickstart as run_quickstart

    report = run_quickstart(out_dir, device=device, say=lambda m: click.echo(m, err=True))
    click.echo(f"report: {report}")


# The signal that interrupted the command: SIGINT unless the SIGTERM handler below saw SIGTERM.
_interrupted_by = {"signal": signal.SIGINT}


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM (systemd, docker, torchrun) ends a command the way Ctrl-C does: the code that
    finalises on KeyboardInterrupt (training's last.pt, the atomic writer's temp cleanup) runs."""
    _interrupted_by["signal"] = signal.Signals(signum)
    raise KeyboardInterrupt


def _interrupt_exit_code() -> int:
    """128 + the signal number: 130 after SIGINT, 143 after SIGTERM."""
    return 128 + int(_interrupted_by["signal"])


def _install_sigterm_handler() -> Any:
    """Commands with their own handling (``run``'s pipeline) install theirs over this one for
    their duration and restore it after; everything else sees SIGTERM as KeyboardInterrupt.
    Returns the handler to restore, or None where nothing was installed."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _interrupted_by["signal"] = signal.SIGINT
            return signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): keep the default
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group and turns user errors into one ``error:`` line.

    SIGINT and SIGTERM both interrupt a command as Ctrl-C does (what was written so far is
    finalised); the exit code is 130 after SIGINT and 143 after SIGTERM.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    previous = _install_sigterm_handler()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            _run(args, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """edgedet's own warnings (clipped boxes, provider fallbacks) as one ``warning:`` line each;
    other libraries' warnings as Python prints them."""
    if category.__module__.startswith("edgedet."):
        click.echo(f"warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _run(args: list[str], debug: bool) -> None:
    try:
        cli.main(args=args, prog_name="edgedet", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns KeyboardInterrupt into Abort
        click.echo(f"error: interrupted by {_interrupted_by['signal'].name}", err=True)
        sys.exit(_interrupt_exit_code())
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EdgedetError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(0)
