"""The yardstick of the encoding benchmarks: what the bfloat16 matrix product allows for a model's FLOPs.

A ViT's work is almost all matrix products of (tokens x width) rows with its weights; the bare bfloat16
product of its MLP's shapes on this CPU (torch, oneDNN: AMX where present), divided by the FLOPs one image
costs, is the images/s no runtime in that precision can much exceed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TowerShape:
    """A ViT image tower: tokens per image, width, and the FLOPs one image costs."""

    tokens: int
    width: int
    flops: float


def tower_shape(visual) -> TowerShape | None:
    """The shape of an open_clip VisionTransformer (None for other towers), its FLOPs counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    conv = getattr(visual, "conv1", None)
    transformer = getattr(visual, "transformer", None)
    if conv is None or transformer is None:
        return None
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    tokens = (size // conv.kernel_size[0]) ** 2 + 1
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel escapes the counter
    try:
        with torch.no_grad(), counter:
            visual(torch.zeros(1, 3, size, size, dtype=next(visual.parameters()).dtype))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return TowerShape(tokens, transformer.width, float(counter.get_total_flops()))


def product_gflops(shape: TowerShape, batch: int = 64, repeats: int = 3) -> float:
    """GFLOP/s of the bfloat16 products of a batch's MLP shapes (tokens x width by width x 4 width, and back),
    on all cores, best of ``repeats``."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows, width = shape.tokens * batch, shape.width
    a, up = torch.randn(rows, width, dtype=torch.bfloat16), torch.randn(width, 4 * width, dtype=torch.bfloat16)
    hidden, down = torch.randn(rows, 4 * width, dtype=torch.bfloat16), torch.randn(4 * width, width,
                                                                                 dtype=torch.bfloat16)
    flops = 2 * 2 * rows * width * 4 * width
    a @ up, hidden @ down  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ up, hidden @ down
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9
