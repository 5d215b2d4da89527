"""The ONNX export job: runs inside a TrainHub run on a node, never in the web server.

    python -m trainhub.sdk._onnx_export --export-id N --model NAME --version V --file PATH
        --shape 1,8 --opset 17 --tolerance 1e-4

Fetches the version's file with the run's token, loads it — TorchScript, a `torch.export`
program, or (last, because unpickling runs the file's code, which is why this happens here and
only here) a whole pickled `nn.Module` — exports it with `torch.onnx.export`, validates the
result with `onnx.checker`, runs one seeded sample input through PyTorch and onnxruntime,
and reports the largest absolute difference. Above the tolerance the export fails; otherwise
`model.onnx` is uploaded and becomes the next version of `<name>-onnx`.

Standard library only at import time: torch, onnx and onnxruntime are imported when it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from trainhub.sdk.run import Run

STATE_DICT = (
    "{file} holds a state_dict (weights without the model's code), which cannot be exported. "
    "Register the whole model: torch.jit.script(model).save(path) (TorchScript), "
    "torch.export.save(torch.export.export(model, (x,)), path), or torch.save(model, path)."
)
NOT_A_MODULE = "{file} did not load as a torch.nn.Module (it gave {kind})."
UNLOADABLE = "{file} could not be loaded as TorchScript, a torch.export program or a pickled module: {error}"
PARITY_FAILED = "Parity check failed: max absolute difference {diff:.3g} is above the tolerance {tolerance:g}."


class ExportFailed(Exception):
    pass


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainhub.sdk._onnx_export")
    parser.add_argument("--export-id", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    return parser.parse_args(argv)


def fetch(workspace: Any, args: argparse.Namespace, target: Path) -> None:
    response = workspace._store.open_model_file(args.model, args.version, args.file)
    digest = hashlib.sha256()
    with response, open(target, "wb") as handle:
        for chunk in response.iter_content(chunk_size=1 << 20):
            digest.update(chunk)
            handle.write(chunk)
    expected = response.headers.get("X-Checksum-Sha256")
    if expected and digest.hexdigest() != expected:
        raise ExportFailed(f"The download of {args.file} was damaged (checksum mismatch).")
    print(
        f"Fetched {args.model}:{args.version} {args.file} ({target.stat().st_size} bytes, "
        f"sha256 {digest.hexdigest()[:12]})",
        flush=True,
    )


def load_model(path: Path, label: str) -> tuple[Any, str]:
    """(module, how it was loaded). Code-executing unpickling is the last resort."""
    # torch, numpy and onnx are imported where used: they are the export environment's, not the SDK's.
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu"), "TorchScript"
    except Exception:  # not a TorchScript archive: try the next format
        pass
    try:
        return torch.export.load(str(path)).module(), "torch.export program"
    except Exception:  # not a torch.export archive either
        pass
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        loaded = None  # more than tensors: a pickled module (or something hostile)
    else:
        if isinstance(loaded, dict):
            raise ExportFailed(STATE_DICT.format(file=label))
    if loaded is None:
        print(
            f"Unpickling {label} as a whole nn.Module (this runs code from the file, inside this job only)",
            flush=True,
        )
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as error:
            raise ExportFailed(UNLOADABLE.format(file=label, error=f"{type(error).__name__}: {error}")) from None
    if not isinstance(loaded, torch.nn.Module):
        raise ExportFailed(NOT_A_MODULE.format(file=label, kind=type(loaded).__name__))
    return loaded, "pickled nn.Module"


def _outputs(value: Any) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().cpu().numpy()]
    if isinstance(value, (list, tuple)):
        return [array for item in value for array in _outputs(item)]
    if isinstance(value, dict):
        return [array for key in value for array in _outputs(value[key])]
    raise ExportFailed(f"The model returned {type(value).__name__}; only tensors (or tuples of them) compare.")


def export_and_compare(model: Any, shape: list[int], opset: int, target: Path) -> tuple[float, dict[str, str]]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    model.eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(*shape, generator=generator)
    with torch.no_grad():
        expected = _outputs(model(sample))
        # The TorchScript-based exporter takes modules, scripted modules and export programs alike.
        torch.onnx.export(model, (sample,), str(target), opset_version=opset, dynamo=False, input_names=["input"])
    onnx.checker.check_model(onnx.load(str(target)), full_check=True)
    print(f"onnx.checker: {target.name} is valid (opset {opset})", flush=True)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
    if len(got) != len(expected):
        raise ExportFailed(f"PyTorch gave {len(expected)} outputs, onnxruntime {len(got)}.")
    diff = 0.0
    for want, have in zip(expected, got, strict=True):
        if want.shape != have.shape:
            raise ExportFailed(f"Output shapes differ: PyTorch {want.shape}, onnxruntime {have.shape}.")
        if want.size:
            diff = max(diff, float(numpy.max(numpy.abs(want.astype("float64") - have.astype("float64")))))
    versions = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return diff, versions


def upload(workspace: Any, path: Path) -> tuple[str, int]:
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    workspace._store.upload_model_blob(sha256, path)
    return sha256, path.stat().st_size


def report(workspace: Any, export_id: int, **values: Any) -> dict[str, Any]:
    return workspace._store.report_onnx_export(export_id, values)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    workspace = Run.get_context(allow_offline=False)._ws
    label = f"{args.model}:{args.version} {args.file}"
    work = Path(os.environ.get("TRAINHUB_OUTPUTS_DIR", ".")).parent / "onnx-export"
    work.mkdir(parents=True, exist_ok=True)
    source = work / Path(args.file).name
    target = work / "model.onnx"
    diff: float | None = None
    try:
        fetch(workspace, args, source)
        model, how = load_model(source, label)
        print(f"Loaded {label} as {how}", flush=True)
        shape = [int(d) for d in args.shape.split(",")]
        diff, versions = export_and_compare(model, shape, args.opset, target)
        print(f"Parity: max absolute difference {diff:.3g} (tolerance {args.tolerance:g})", flush=True)
        if diff > args.tolerance:
            raise ExportFailed(PARITY_FAILED.format(diff=diff, tolerance=args.tolerance))
        sha256, size = upload(workspace, target)
        done = report(
            workspace,
            args.export_id,
            passed=True,
            max_abs_diff=diff,
            onnx_sha256=sha256,
            onnx_size=size,
            message="",
            details=dict(versions, loader=how),
        )
        print(f"Registered {done['result']} (model.onnx, {size} bytes)", flush=True)
        return 0
    except ExportFailed as failure:
        print(f"Export failed: {failure}", file=sys.stderr, flush=True)
        report(workspace, args.export_id, passed=False, max_abs_diff=diff, message=str(failure))
        return 1
    except Exception as error:
        traceback.print_exc()
        report(
            workspace,
            args.export_id,
            passed=False,
            max_abs_diff=diff,
            message=f"{type(error).__name__}: {error}"[:2000],
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
