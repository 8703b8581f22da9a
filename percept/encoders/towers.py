"""Running a torch CLIP model's towers in the chosen precision and runtime (shared by open_clip and HF).

With the torch runtime the model's weights are cast to the precision and both towers run eagerly.
With OpenVINO the weights stay float32: the image tower is compiled (on the first batch, so that a
process that only needs the transform never compiles) and runs in the precision, and the text tower
runs under torch's autocast in it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np

from percept.encoders.pixels import PixelTransform, normalised
from percept.encoders.precision import torch_dtype

if TYPE_CHECKING:
    import torch

    from percept.encoders.openvino_runtime import CompiledTower


def model_dtype(precision: str, runtime: str):
    """The dtype the torch model's weights are kept in."""
    import torch

    return torch.float32 if runtime == "openvino" else torch_dtype(precision)


class ImageTower:
    """Features of batches of 8-bit pixels from ``tower`` (normalised pixels → features). With torch the pixels
    go to the device as 8-bit (a quarter of float32's bytes) and are normalised there, in the model's first step;
    pixels already on the device (:mod:`percept.encoders.device_feed`) are used where they are."""

    def __init__(self, tower, transform: PixelTransform, size: tuple[int, int], precision: str, runtime: str,
                 device: str):
        self.tower, self.transform, self.size = tower, transform, size
        self.precision, self.runtime, self.device = precision, runtime, device
        self._compiled: CompiledTower | None = None
        self._module: torch.nn.Module | None = None

    def __call__(self, batch) -> np.ndarray:
        import torch

        if self.runtime == "openvino":
            if self._compiled is None:
                from percept.encoders.openvino_runtime import CompiledTower

                self._compiled = CompiledTower(self._normalised(torch.float32), self.size, self.precision)
            return self._compiled(batch.numpy())
        if self._module is None:
            self._module = self._normalised(torch_dtype(self.precision))
        with torch.inference_mode():
            return self._module(batch.to(self.device, non_blocking=True)).float().cpu().numpy()

    def _normalised(self, dtype):
        return normalised(self.tower, self.transform.mean, self.transform.std, dtype).to(self.device).eval()


def text_context(precision: str, runtime: str, device: str):
    """Where the text tower runs: inference mode, under autocast when the weights stayed float32 (OpenVINO)."""
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if runtime == "openvino" and precision != "fp32":
        stack.enter_context(torch.autocast(device.split(":")[0], dtype=torch_dtype(precision)))
    return stack
