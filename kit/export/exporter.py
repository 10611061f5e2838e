"""ONNX export of a trained member, and the parity check that guards every export.

The graph has one input, `image` (float32, B x C x H x W, already normalised, B dynamic), and
two outputs, `logits` (B x K, or B x 2K for a flip-as-new-identity member) and `embedding`
(B x D, before L2 normalisation): exactly `WhaleNet.forward`. The file is self-contained (weights
inside, no external data) and carries the member's `MemberInfo` as JSON in its metadata, so it
can be run and understood without the checkpoint.

Exporters: the torch.export-based one (`dynamo=True`, PyTorch's default and recommended path);
if it cannot capture a network, the TorchScript exporter is tried instead and the fallback is
recorded in the file's metadata. Either way the parity check decides: exporters have shipped
wrong graphs before (a Conv bias in ResNet50), so an export whose outputs differ from PyTorch's
by more than `tolerance` (relative) is an error with the figures, and leaves no file behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import torch

from kit.errors import KitError
from kit.io import Outputs, atomic_path

OPSET = 20  # what torch's dynamo exporter emits natively; onnxruntime >= 1.18 reads its IR-10 files
INPUT = "image"
OUTPUTS = ("logits", "embedding")
TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2  # half precision keeps ~3 significant digits
METADATA_KEY = "whale_kit.member"


class ParityError(KitError):
    """The ONNX graph does not compute what the PyTorch network computes."""


@dataclass
class Parity:
    """Relative errors of the ONNX outputs against PyTorch's, per output name."""

    rel_error: dict[str, float]
    max_abs: dict[str, float]
    batches: tuple[int, ...]
    tolerance: float
    exporter: str = ""

    @property
    def ok(self) -> bool:
        return all(e <= self.tolerance for e in self.rel_error.values())

    def summary(self) -> str:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in self.rel_error.items())
        return f"relative error {errs} (tolerance {self.tolerance:.0e}, batches {'/'.join(map(str, self.batches))})"


def relative_error(reference: np.ndarray, got: np.ndarray) -> float:
    """max |got - reference| / max |reference|: scale-free, and 0-safe."""
    reference = np.asarray(reference, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if reference.shape != got.shape:
        return float("inf")
    if not np.isfinite(got).all():
        return float("inf")
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-12)
    return float(np.abs(got - reference).max(initial=0.0) / scale)


def member_metadata(info) -> str:
    """MemberInfo as JSON (dataclass or plain object), for the ONNX file's metadata."""
    raw = info.to_dict() if hasattr(info, "to_dict") else (
        dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(vars(info)))
    return json.dumps(raw, default=lambda v: list(v) if isinstance(v, (tuple, set)) else str(v))


def read_metadata(path: str | Path) -> dict:
    """The MemberInfo JSON and export details stored in an exported model.onnx."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    out = {k: v for k, v in props.items() if k != METADATA_KEY}
    if METADATA_KEY in props:
        out["member"] = json.loads(props[METADATA_KEY])
    return out


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Errors only from a logger for the block: torch 2.9's exporter logs a warning per unannotated
    torchvision operator it registers, four lines on every export that tell a user nothing."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _capture(model: torch.nn.Module, example: torch.Tensor, opset: int, dynamo: bool) -> onnx.ModelProto:
    """Run one exporter quietly and return the ModelProto (weights inside)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model, (example,), dynamo=True, verbose=False, opset_version=opset,
                input_names=[INPUT], output_names=list(OUTPUTS),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                optimize=True,
            )
            return program.model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            model, (example,), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT], output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
        )
        return onnx.load_from_string(buf.getvalue())


def export_onnx(model: torch.nn.Module, info, path: str | Path, *, opset: int = OPSET,
                exporter: str = "auto") -> str:
    """Write `model` (in eval mode, on the CPU) to `path` as one self-contained ONNX file.

    `exporter` is "dynamo", "torchscript" or "auto" (dynamo, then TorchScript if capture fails).
    Returns the exporter that succeeded. Not atomic by itself: see `export_checked`.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise KitError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    model = model.eval().to("cpu")
    h, w = info.input_size
    example = torch.zeros(2, 3, int(h), int(w), dtype=torch.float32)  # greyscale members repeat to 3 channels
    tried = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors = []
    for name in tried:
        try:
            with torch.inference_mode(False), torch.no_grad():
                proto = _capture(model, example, opset, dynamo=name == "dynamo")
            break
        except Exception as e:  # exporter internals raise anything; report them all at the end
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    else:
        raise KitError(f"{getattr(info, 'name', 'model')}: ONNX export failed ({'; '.join(errors)})")
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(OUTPUTS):
        raise KitError(f"{getattr(info, 'name', 'model')}: exported graph has outputs {outputs}, expected {list(OUTPUTS)} "
                       "(WhaleNet.forward must return (logits, embedding))")
    for key, value in ((METADATA_KEY, member_metadata(info)), ("whale_kit.exporter", name),
                       ("whale_kit.fallback", "; ".join(errors))):
        if value:
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return name


def torch_outputs(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eager PyTorch (logits, embedding) for a numpy batch, as float32 numpy."""
    with torch.inference_mode():
        logits, embedding = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return logits.float().numpy(), embedding.float().numpy()


def check_parity(model: torch.nn.Module, onnx_path: str | Path, inputs: np.ndarray, *,
                 tolerance: float = TOLERANCE, batches: tuple[int, ...] | None = None) -> Parity:
    """Run the ONNX file (CPU provider) and PyTorch on `inputs`; relative error per output.

    `batches`: batch sizes to try (default: all of `inputs`, then a single image, which also
    exercises the dynamic batch axis). The worst error over all batches counts.
    """
    from kit.export.runtime import open_session

    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if batches is None:
        batches = tuple(sorted({len(inputs), 1}, reverse=True))
    session = open_session(onnx_path, "cpu")
    rel = {o: 0.0 for o in OUTPUTS}
    mabs = {o: 0.0 for o in OUTPUTS}
    for b in batches:
        x = inputs[:b]
        ref = torch_outputs(model, x)
        got = session.run(list(OUTPUTS), {INPUT: x})
        for name, r, g in zip(OUTPUTS, ref, got):
            rel[name] = max(rel[name], relative_error(r, g))
            if r.shape == g.shape:
                mabs[name] = max(mabs[name], float(np.abs(r.astype(np.float64) - g).max(initial=0.0)))
            else:
                mabs[name] = float("inf")
    return Parity(rel, mabs, tuple(batches), tolerance)


def export_checked(model: torch.nn.Module, info, path: str | Path, inputs: np.ndarray, *,
                   tolerance: float = TOLERANCE, opset: int = OPSET, exporter: str = "auto",
                   out: Outputs | None = None) -> Parity:
    """Export to `path` and check parity; the file is renamed into place only if the check passes
    (with `out`: staged there, `out.staged(path)` until the run commits).

    Raises ParityError naming the member, each output's relative and absolute error and the
    tolerance; `path` is then left as it was (absent, or the previous good export).
    """
    path = Path(path)
    with atomic_path(path, out) as tmp:
        used = export_onnx(model, info, tmp, opset=opset, exporter=exporter)
        parity = check_parity(model, tmp, inputs, tolerance=tolerance)
        parity.exporter = used
        if not parity.ok:
            worst = ", ".join(f"{k}: relative {parity.rel_error[k]:.3e} (max abs diff {parity.max_abs[k]:.3e})"
                              for k in OUTPUTS)
            raise ParityError(f"{path}: parity check failed, ONNX differs from PyTorch beyond "
                              f"{tolerance:.0e} ({worst}; {used} exporter, batches {parity.batches}); no file written")
    return parity


def half_precision(src: str | Path) -> onnx.ModelProto:
    """An fp32 model.onnx converted to half precision weights and compute, fp32 in and out.

    Uses onnxruntime's own converter (`onnxruntime.transformers.float16`, shipped in the
    onnxruntime wheel: no extra package). Input and output stay float32 (`keep_io_types`), so a
    runner feeds it exactly what it feeds the fp32 model. Meant for the CUDA provider (tensor
    cores); onnxruntime's CPU kernels run it too, slowly.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(model, keep_io_types=True)


def to_fp16(src: str | Path, dst: str | Path) -> None:
    """`half_precision(src)` written to `dst` atomically."""
    half = half_precision(src)
    with atomic_path(dst) as tmp:
        onnx.save_model(half, str(tmp), save_as_external_data=False)


def export_fp16_checked(model: torch.nn.Module, fp32_path: str | Path, path: str | Path, inputs: np.ndarray, *,
                        tolerance: float = FP16_TOLERANCE, out: Outputs | None = None) -> Parity:
    """`to_fp16`, then the parity check at half-precision tolerance; atomic like `export_checked`."""
    path = Path(path)
    with atomic_path(path, out) as tmp:
        onnx.save_model(half_precision(fp32_path), str(tmp), save_as_external_data=False)
        parity = check_parity(model, tmp, inputs, tolerance=tolerance)
        parity.exporter = "fp16"
        if not parity.ok:
            raise ParityError(f"{path}: fp16 parity check failed ({parity.summary()}); no file written")
    return parity
