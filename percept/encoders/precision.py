"""The arithmetic an encoder runs in (``--precision``) and the runtime that runs it.

``auto`` is the fastest precision the device multiplies natively: float16 on CUDA, bfloat16 on a
CPU with AMX or AVX512-BF16 (Intel Xeon since Cooper Lake, AMD Zen 4), float32 elsewhere.
Reduced precision keeps the vectors within cosine 0.999 of float32 ones of the same weights.

Runtimes: ``torch`` (eager PyTorch, every device) and ``openvino`` (the image tower compiled by
OpenVINO on the CPU: ``pip install 'percept[openvino]'``). ``auto`` takes OpenVINO for CPU encoding
where it is installed, else torch.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from percept.errors import PerceptError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "openvino")
#: CPU flags (as Linux lists them) of native bfloat16 products.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise PerceptError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16); False where it cannot be told."""
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(BF16_FLAGS & set(line.partition(":")[2].split()))
    return False


def resolve_precision(precision: str, device: str) -> str:
    """The concrete precision (fp32, bf16 or fp16) that ``precision`` means on ``device``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: str) -> str:
    """The runtime (torch or openvino) that ``runtime`` means for encoding images on ``device``."""
    if runtime not in RUNTIMES:
        raise PerceptError(f"the runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "openvino" and device != "cpu":
        raise PerceptError(f"OpenVINO encodes on the CPU only, not on {device}: use the torch runtime there")
    if runtime == "openvino" and not openvino_installed():
        raise PerceptError("the OpenVINO runtime is not installed: pip install 'percept[openvino]'")
    if runtime == "auto":
        return "openvino" if device == "cpu" and openvino_installed() else "torch"
    return runtime


def torch_dtype(precision: str):
    """The torch dtype of a concrete precision."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def default_device() -> str:
    """CUDA where present, else the CPU (also where torch is not installed)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
