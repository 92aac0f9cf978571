"""The ``edgedet`` command: one small function per subcommand; the logic lives in the packages.

Torch is imported inside the commands that need it, so the runtime commands work on an edge
device that installed only numpy, OpenCV and ONNX Runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgedet import __version__
from edgedet.errors import EdgedetError, MissingDependencyError


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
@click.option("--format", "formats", default="onnx,torchscript", show_default=True,
              help="Comma-separated: onnx, torchscript.")
@click.option("--imgsz", callback=_parse_imgsz, help="Input size N or H,W (default: the model's).")
@click.option("--dynamic", is_flag=True, help="Free height and width too (batch is always dynamic).")
@click.option("--half", is_flag=True, help="fp16 weights and activations; decoding and NMS stay fp32.")
@click.option("--nms/--no-nms", default=True, show_default=True, help="Detectors: NMS in the graph, or raw predictions.")
@click.option("--conf", type=click.FloatRange(0, 1), default=0.25, show_default=True, help="Score threshold.")
@click.option("--iou", type=click.FloatRange(0, 1), default=0.45, show_default=True, help="NMS IoU threshold.")
@click.option("--max-det", type=click.IntRange(1, 10000), default=100, show_default=True, help="Detections per image.")
@click.option("--agnostic", is_flag=True, help="Class-agnostic NMS.")
@click.option("--input", "input_format", type=click.Choice(["uint8", "float"]), default="uint8", show_default=True,
              help="uint8 [B,H,W,3] BGR frames, or float32 [B,3,H,W] RGB 0..1.")
@click.option("--probs", is_flag=True, help="Segmenters: also output class probabilities.")
@click.option("--opset", type=int, help="ONNX opset (default 17).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("exported"),
              show_default=True, help="Output directory.")
@click.option("--name", help="File name stem (default: the model name).")
@click.option("--triton", "triton", type=click.Path(file_okay=False), help="Also write a Triton model repository here.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim graph simplification.")
@click.option("--no-check", is_flag=True, help="Skip running the written files against PyTorch.")
def export(model_name: str, weights: str | None, random_init: bool, formats: str, imgsz, dynamic: bool,
           half: bool, nms: bool, conf: float, iou: float, max_det: int, agnostic: bool, input_format: str,
           probs: bool, opset: int | None, out_dir: Path, name: str | None, triton: str | None,
           no_simplify: bool, no_check: bool) -> None:
    """Export a model to ONNX and TorchScript with preprocessing, decoding and NMS in the graph."""
    _require_torch()
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.export.deploy import NMSSettings

    options = ExportOptions(
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()), imgsz=imgsz, dynamic=dynamic,
        half=half, nms=NMSSettings(conf=conf, iou=iou, max_det=max_det, agnostic=agnostic) if nms else None,
        input_format=input_format, opset=opset, probs=probs, simplify=not no_simplify, check=not no_check,
        name=name, triton=triton)
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group and turns user errors into one ``error:`` line."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="edgedet", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EdgedetError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
