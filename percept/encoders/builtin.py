"""Built-in offline models (``percept:tiny``, ``percept:small``): small image and text towers whose
weights are drawn from numpy's seeded generator, so every run on every machine gives the same
vectors without any file. Their vectors carry no learned meaning: they exist for tests, CI and
the demo; real perception modelling needs pretrained CLIP weights.

Image tower: resize and centre-crop to a square, cut into patches, one random projection per
patch plus a position term, GELU, mean over patches, random projection to ``dim``.
Text tower: hashed character trigrams, mean of their random embeddings, GELU, projection.
Arithmetic is float64 in numpy (rounded to float32 at the end) so results do not depend on
the CPU's vector instructions.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from percept.encoders.base import Encoder, unit_rows

VERSION = 1
MEAN, STD = 0.5, 0.25


@dataclass(frozen=True)
class BuiltinConfig:
    image_size: int
    patch: int
    width: int
    dim: int
    buckets: int
    seed: int


CONFIGS = {
    "tiny": BuiltinConfig(image_size=32, patch=8, width=128, dim=64, buckets=4096, seed=20240227),
    "small": BuiltinConfig(image_size=64, patch=8, width=384, dim=256, buckets=16384, seed=20240228),
}


def weights_id(variant: str) -> str:
    return f"builtin:percept:{variant}:v{VERSION}"


class SquareTransform:
    """PIL image → RGB, shorter side resized to ``size``, centre crop, normalised CHW float32 tensor."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        import torch
        from PIL import Image

        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        scale = self.size / min(width, height)
        resized = (max(self.size, round(width * scale)), max(self.size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left, top = (resized[0] - self.size) // 2, (resized[1] - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        pixels = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def trigram_ids(text: str, buckets: int) -> list[int]:
    """Bucket ids of the character trigrams of ``text`` padded with two marks on each side."""
    padded = "\x02\x02" + text + "\x03\x03"
    return [zlib.crc32(padded[i:i + 3].encode("utf-8")) % buckets for i in range(len(padded) - 2)]


class BuiltinEncoder(Encoder):
    """A ``percept:<variant>`` model; always on the CPU in float64 arithmetic (numpy)."""

    precision = "fp64"
    runtime = "numpy"

    def __init__(self, variant: str):
        cfg = CONFIGS[variant]
        self.cfg = cfg
        self.name = f"percept:{variant}"
        self.weights_id = weights_id(variant)
        self.dim = cfg.dim
        self.transform = SquareTransform(cfg.image_size)
        rng = np.random.default_rng(cfg.seed)
        patch_len = 3 * cfg.patch * cfg.patch
        patches = (cfg.image_size // cfg.patch) ** 2
        self.patch_proj = rng.standard_normal((patch_len, cfg.width)) / np.sqrt(patch_len)
        self.position = rng.standard_normal((patches, cfg.width)) * 0.5
        self.image_proj = rng.standard_normal((cfg.width, cfg.dim)) / np.sqrt(cfg.width)
        self.token_embedding = rng.standard_normal((cfg.buckets, cfg.width))
        self.text_proj = rng.standard_normal((cfg.width, cfg.dim)) / np.sqrt(cfg.width)

    def encode_image_batch(self, batch) -> np.ndarray:
        x = np.asarray(batch.detach().cpu().numpy(), dtype=np.float64)
        n, channels, size, _ = x.shape
        p = self.cfg.patch
        grid = size // p
        patches = x.reshape(n, channels, grid, p, grid, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, -1)
        hidden = _gelu(patches @ self.patch_proj + self.position).mean(axis=1)
        return unit_rows(hidden @ self.image_proj)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        hidden = np.zeros((len(texts), self.cfg.width))
        for row, text in enumerate(texts):
            hidden[row] = self.token_embedding[trigram_ids(text, self.cfg.buckets)].mean(axis=0)
        return unit_rows(_gelu(hidden) @ self.text_proj)
