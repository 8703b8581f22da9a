"""Image towers compiled by OpenVINO for the CPU (``pip install 'percept[openvino]'``).

On this project's 2-core AMX machine, OpenVINO ran an untrained ViT-B-32's image tower at 1.5 times
eager PyTorch in bfloat16 (weights cast, oneDNN) and 5 to 7 times PyTorch's autocast and
``torch.compile`` (inductor, frozen weights); ONNX Runtime's CPU provider has no bfloat16 kernels
for x86 and ran at float32 speed (``benchmarks/bench_runtimes.py`` measures them side by side).
Its bfloat16 keeps normalisation and softmax in float32, so the vectors stay within cosine 0.9999
of float32 ones of the same weights.

The tower is traced once through OpenVINO's PyTorch front end (not ``openvino.convert_model``,
whose conversion tool reports usage to a remote host by default) with 8-bit pixels in, the
model's normalisation in the graph, and a free batch size.
"""

from __future__ import annotations

import warnings

import numpy as np

from percept.errors import PerceptError

#: OpenVINO's names of the inference precisions.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class CompiledTower:
    """A torch module from (n, 3, H, W) uint8 pixels to (n, dim) features, compiled for the CPU in ``precision``."""

    def __init__(self, module, size: tuple[int, int], precision: str):
        import openvino as ov
        import torch
        from openvino.frontend import FrontEndManager
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

        example = torch.zeros((2, 3, *size), dtype=torch.uint8)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the front end traces with torch.jit
                decoder = TorchScriptPythonDecoder(module.eval(), example_input=(example,))
            frontend = FrontEndManager().load_by_framework("pytorch")
            model = frontend.convert(frontend.load(decoder))
            model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, *size])})
            self.compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[precision],
                                                                   "PERFORMANCE_HINT": "LATENCY"})
        except (RuntimeError, TypeError, ValueError) as exc:
            raise PerceptError(f"OpenVINO cannot compile this image tower ({exc}): "
                               "uninstall openvino to encode with PyTorch") from None
        self.request = self.compiled.create_infer_request()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Features (float32) of a batch of 8-bit pixels."""
        result = self.request.infer({0: np.ascontiguousarray(pixels, dtype=np.uint8)}, share_inputs=True)
        return np.array(result[0], dtype=np.float32)
