"""CPU runtimes side by side for an image tower: images/s of an untrained open_clip ViT-B-32 on batches already
in memory (no decoding), each beside the bfloat16 product limit for its FLOPs measured just before it: eager
PyTorch in float32, under autocast to bfloat16, with its weights cast to bfloat16, ``torch.compile`` (inductor,
frozen weights) in bfloat16, OpenVINO in bfloat16 and float32, and ONNX Runtime's CPU provider (float32: it has
no bfloat16 kernels for x86). Runtimes that are not installed are skipped. The encoder runs the fastest
(``percept.encoders.precision``); this benchmark is why.

    python -m benchmarks.bench_runtimes [--model ARCH] [--batch-size B]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

from benchmarks.common import best_seconds
from benchmarks.encoding_limits import product_gflops, tower_shape

REPEATS = 3


def _tower(arch: str):
    import open_clip
    import torch

    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None).visual.eval()


def runtimes(arch: str, x):
    """(name, seconds of setup, a function that encodes the batch ``x``) for each runtime installed here."""
    import torch

    def eager_fp32():
        tower = _tower(arch)
        return lambda: tower(x)

    def autocast():
        tower = _tower(arch)

        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return tower(x)
        return run

    def cast_bf16():
        tower, xb = _tower(arch).to(torch.bfloat16), x.to(torch.bfloat16)
        return lambda: tower(xb)

    def compiled():
        import torch._inductor.config as inductor

        inductor.freezing = True
        tower = torch.compile(_tower(arch).to(torch.bfloat16))
        xb = x.to(torch.bfloat16)
        return lambda: tower(xb)

    def openvino(precision: str):
        from percept.encoders.openvino_runtime import CompiledTower
        from percept.encoders.pixels import normalised

        def build():
            tower = CompiledTower(normalised(_tower(arch), (0.5,) * 3, (0.25,) * 3), tuple(x.shape[2:]), precision)
            pixels = torch.randint(0, 256, tuple(x.shape), dtype=torch.uint8).numpy()
            return lambda: tower(pixels)
        return build

    def onnxruntime():
        import onnxruntime as ort

        tower = _tower(arch)
        with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
            path = Path(scratch) / "tower.onnx"
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
            try:
                torch.onnx.export(tower, (x,), str(path), dynamo=False, opset_version=17)
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name, pixels = session.get_inputs()[0].name, x.numpy()
        return lambda: session.run(None, {name: pixels})

    found = [("torch fp32", eager_fp32), ("torch autocast bf16", autocast), ("torch bf16 weights", cast_bf16),
             ("torch.compile bf16", compiled)]
    if importlib.util.find_spec("openvino"):
        found += [("openvino bf16", openvino("bf16")), ("openvino fp32", openvino("fp32"))]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        found.append(("onnxruntime fp32", onnxruntime))
    return found


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (default ViT-B-32)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    shape = tower_shape(_tower(args.model))
    size = _tower(args.model).image_size
    size = size if isinstance(size, int) else size[0]
    x = torch.randn(args.batch_size, 3, size, size)
    print(f"CPU runtimes, untrained open_clip {args.model} image tower ({shape.flops / 1e9:.1f} GFLOP an image), "
          f"batches of {args.batch_size} in memory; limit: the bfloat16 product of its shapes just before each")
    print(f"{'runtime':<22} {'setup s':>8} {'images/s':>9} {'limit':>7} {'share':>6}")
    with torch.no_grad():
        for name, build in runtimes(args.model, x):
            start = time.perf_counter()
            try:
                run = build()
                run()
            except Exception as exc:  # noqa: BLE001 - a runtime that fails here is reported, not fatal
                print(f"{name:<22} failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            setup = time.perf_counter() - start
            limit = product_gflops(shape, args.batch_size) * 1e9 / shape.flops
            rate = args.batch_size / best_seconds(run, REPEATS, warm_up=True)
            print(f"{name:<22} {setup:>8.1f} {rate:>9.1f} {limit:>7.0f} {rate / limit:>6.0%}", flush=True)


if __name__ == "__main__":
    main()
