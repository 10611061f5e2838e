"""Running an exported member: onnxruntime sessions tuned per provider, and one runner interface.

A runner is a callable `runner(batch) -> (logits, embedding)` over a float32 numpy batch
(B x C x H x W), with a `provider` attribute naming what actually ran it. `OnnxRunner` is the
production path; `TorchRunner` runs the eager PyTorch network behind the same interface, so
parity checks and benchmarks compare like with like.

Provider choice. "auto" asks for CUDA only when the GPU driver (libcuda) is present: the GPU
wheel lists CUDAExecutionProvider everywhere and, when it cannot start, falls back to the CPU
silently (bar a burst of log lines). So the provider a session really got is read back from
`session.get_providers()`; asking for "cuda" and getting the CPU is an error, not a surprise.
Where onnxruntime has no usable CUDA provider but PyTorch has a GPU (`torch_gpu`), export's
"auto" runs a `TorchRunner` on the GPU instead: the same network, its ONNX parity checked.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kit.errors import KitError
from kit.export.options import PROVIDERS
from kit.io import cpu_count

_ORT_NAME = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_SHORT = {v: k for k, v in _ORT_NAME.items()}

# cuDNN picks the fastest convolution per shape once (a few seconds at the first batch); the arena
# grows by what a batch needs, so the smaller last batch does not double the reservation.
CUDA_OPTIONS = {
    "device_id": "0",
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "arena_extend_strategy": "kSameAsRequested",
    "cudnn_conv_use_max_workspace": "1",
    "do_copy_in_default_stream": "1",
}


def gpu_present() -> bool:
    """True when an NVIDIA driver is loadable and onnxruntime was built with CUDA."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def ort_cuda_listed() -> bool:
    """This onnxruntime build has a CUDA provider (whether it can start is another matter)."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_gpu() -> bool:
    """PyTorch can run on a CUDA GPU here."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """CPU-tuned options: every graph optimisation, one intra-op thread per core, sequential graph."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a CNN is a chain: parallel branches buy nothing
    so.intra_op_num_threads = threads or cpu_count()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only; the provider actually used is reported by us
    # Idle intra-op threads sleep instead of spinning: the decode threads need those cores between
    # batches (measured on 2 cores: ~15% more images/s end to end, at no cost to a lone session).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def open_session(path: str | Path, provider: str = "auto", threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime session on `provider` ("auto", "cpu" or "cuda") for the model at `path`.

    "cuda" raises KitError if the CUDA provider cannot start; "auto" falls back to the CPU.
    """
    if provider not in PROVIDERS:
        raise KitError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: ONNX model not found")
    want_cuda = provider == "cuda" or (provider == "auto" and gpu_present())
    providers: list = ["CPUExecutionProvider"]
    if want_cuda:
        try:  # CUDA and cuDNN from the nvidia-* wheels PyTorch installed, if no system copy
            ort.preload_dlls()
        except Exception:
            pass
        providers.insert(0, ("CUDAExecutionProvider", CUDA_OPTIONS))
    try:
        session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as e:  # onnxruntime's own exception types are not public API
        raise KitError(f"{path}: onnxruntime cannot load the model ({str(e).splitlines()[0]})") from None
    if provider == "cuda" and provider_of(session) != "cuda":
        raise KitError(f"{path}: the CUDA provider was asked for but onnxruntime fell back to "
                       f"{session.get_providers()[0]} (no GPU, or CUDA 12+/cuDNN 9 libraries not found)")
    return session


def provider_of(session: ort.InferenceSession) -> str:
    """"cuda" or "cpu" (or onnxruntime's own name for others): the provider that runs the graph."""
    first = session.get_providers()[0]
    return _SHORT.get(first, first)


class OnnxRunner:
    """`runner(x) -> (logits, embedding)` over an ONNX file with onnxruntime."""

    def __init__(self, path: str | Path, provider: str = "auto", threads: int | None = None):
        self.path = Path(path)
        self.session = open_session(path, provider, threads)
        self.provider = provider_of(self.session)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        if self.outputs[:2] != ["logits", "embedding"]:
            raise KitError(f"{path}: model outputs are {self.outputs}, expected logits, embedding")

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self.session.run(self.outputs[:2], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return logits, embedding


class TorchRunner:
    """The same interface over the eager PyTorch network (parity checks and benchmarks)."""

    def __init__(self, model, device: str = "cpu", autocast_fp16: bool = False, threads: int | None = None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.autocast = autocast_fp16
        self.threads = threads  # CPU threads for this runner's calls (torch's setting is process-wide)
        self.provider = f"torch-{self.device.type}" + ("-fp16" if autocast_fp16 else "")

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            logits, embedding = self.model(batch)
        return logits.float().cpu().numpy(), embedding.float().cpu().numpy()


def choose_runner(onnx: Path, fp32_onnx: Path, model, provider: str, threads: int | None,
                  fp16: bool) -> tuple["OnnxRunner | TorchRunner", bool, str | None]:
    """What runs a member's inference: (the runner, whether it runs fp16, a note to print or None).
    onnxruntime with `provider` over `onnx` (the fp16 file when asked); fp16 on the CUDA provider only,
    else `fp32_onnx` in fp32. An onnxruntime without a usable CUDA provider (a CPU-only wheel in a GPU
    image, or CUDA libraries it cannot load) where PyTorch has a GPU, under `auto`: the GPU still runs,
    through the PyTorch network `model` whose ONNX parity was checked. No CPU session is built first
    when none is listed."""
    gpu_by_torch = provider == "auto" and torch_gpu()
    runner = None if (gpu_by_torch and not ort_cuda_listed()) else OnnxRunner(onnx, provider, threads)
    if runner is None or (gpu_by_torch and runner.provider != "cuda"):
        return TorchRunner(model, "cuda", autocast_fp16=fp16), fp16, None
    if fp16 and runner.provider != "cuda":
        return (OnnxRunner(fp32_onnx, provider, threads), False,
                f"fp16 is for the CUDA provider; running fp32 on {runner.provider}")
    return runner, fp16, None
