"""open_clip models: ``open_clip:ARCH``, ``open_clip:ARCH/TAG`` and OpenAI names such as ``ViT-B/32``.

Weights are resolved apart from the architecture: a ``--pretrained`` file or folder, the
Hugging Face cache, or ``~/.cache/clip`` (where open_clip and OpenAI's clip keep downloads);
``--pretrained random`` gives a seeded random initialisation (for benchmarks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING

from percept.encoders.base import Encoder, unit_rows
from percept.encoders.pixels import split_transform
from percept.encoders.towers import ImageTower, model_dtype, text_context
from percept.encoders.weights import (
    checkpoint_in_dir,
    file_sha256,
    hub_file,
    local_path,
    missing_weights,
)
from percept.errors import PerceptError

if TYPE_CHECKING:
    import torch

#: OpenAI's model names (as clip-retrieval and OpenAI's clip take them) → open_clip architectures.
OPENAI_NAMES = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
RANDOM = "random"
URL_CACHE = Path("~/.cache/clip")
TEXT_BATCH = 256


@dataclass(frozen=True)
class OpenClipWeights:
    """Where the weights of an architecture come from; ``checkpoint`` None means random initialisation."""

    arch: str
    tag: str | None
    checkpoint: Path | None
    weights_id: str


def resolve(model: str, arch: str, tag: str | None, pretrained: str | None) -> OpenClipWeights:
    """Check the architecture and find its weights on this machine."""
    import open_clip

    if arch not in open_clip.list_models():
        close = get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise PerceptError(f"open_clip has no architecture {arch!r} in {model}{hint}")
    if pretrained == RANDOM:
        return OpenClipWeights(arch, None, None, f"random:open_clip:{arch}:torch-seed-0")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag is not None and tag not in tags:
        raise PerceptError(f"open_clip knows no weights {tag!r} for {arch}: choose one of {', '.join(tags) or 'none'}")
    tag = tag or (tags[0] if tags else None)
    if pretrained is not None:
        path = local_path(pretrained, model)
        checkpoint = path if path.is_file() else checkpoint_in_dir(path)
        if checkpoint is None:
            raise PerceptError(f"--pretrained {pretrained} holds no checkpoint file "
                               "(*.safetensors, *.bin, *.pth, *.pt)")
    elif tag is None:
        raise PerceptError(f"open_clip lists no pretrained weights for {arch}: give --pretrained PATH, "
                           f"or --pretrained {RANDOM} for an untrained model")
    else:
        checkpoint = _cached_checkpoint(model, arch, tag)
    return OpenClipWeights(arch, tag, checkpoint, file_sha256(checkpoint))


def _cached_checkpoint(model: str, arch: str, tag: str) -> Path:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    wanted = []
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        for name in names:
            found = hub_file(repo, name)
            if found:
                return found
        wanted.append(f"Hugging Face repository {repo} (file {' or '.join(names)})")
    if cfg.get("url"):
        cached = URL_CACHE.expanduser() / os.path.basename(cfg["url"])
        if cached.is_file():
            return cached
        wanted.append(f"file {cached}")
    raise missing_weights(f"{model} (open_clip {arch}, weights {tag!r})", " or ".join(wanted))


def _is_torchscript(path: Path) -> bool:
    """OpenAI's original checkpoints are TorchScript archives."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def image_transform(weights: OpenClipWeights):
    """The model's image transform as the built model has it, from open_clip's settings alone: the architecture's
    image size and the weights' mean, std, interpolation and resize mode (the model itself is not built)."""
    import open_clip

    size = open_clip.get_model_config(weights.arch)["vision_cfg"].get("image_size", 224)
    if weights.checkpoint is not None and _is_torchscript(weights.checkpoint):
        return split_transform(open_clip.image_transform(size, is_train=False))
    cfg = open_clip.get_pretrained_cfg(weights.arch, weights.tag) if weights.tag else {}
    return split_transform(open_clip.image_transform(
        size, is_train=False, mean=cfg.get("mean"), std=cfg.get("std"), interpolation=cfg.get("interpolation"),
        resize_mode=cfg.get("resize_mode")))


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Silence open_clip's warning that an untrained model was asked for (``--pretrained random``)."""
    if active:
        logging.disable(logging.WARNING)
    try:
        yield
    finally:
        if active:
            logging.disable(logging.NOTSET)


class OpenClipEncoder(Encoder):
    """An open_clip model in eval mode, in ``precision`` (fp32, bf16 or fp16) on ``runtime`` (torch or openvino)."""

    def __init__(self, name: str, weights: OpenClipWeights, device: str | None = None, precision: str = "fp32",
                 runtime: str = "torch"):
        import open_clip
        import torch

        self.name, self.weights_id = name, weights.weights_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision, self.runtime = precision, runtime
        self.arch = weights.arch
        cfg = open_clip.get_pretrained_cfg(weights.arch, weights.tag) if weights.tag else {}
        try:
            if weights.checkpoint is not None and _is_torchscript(weights.checkpoint):
                model = open_clip.load_openai_model(str(weights.checkpoint), precision="fp32", device="cpu")
                transform = open_clip.image_transform(model.visual.image_size, is_train=False)
            else:
                with torch.random.fork_rng(), _quiet_random_init(weights.checkpoint is None):
                    torch.manual_seed(0)
                    model, _, transform = open_clip.create_model_and_transforms(
                        weights.arch, pretrained=str(weights.checkpoint) if weights.checkpoint else None,
                        force_quick_gelu=bool(cfg.get("quick_gelu")), pretrained_text=False,
                        image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                        image_interpolation=cfg.get("interpolation"), image_resize_mode=cfg.get("resize_mode"))
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise PerceptError(f"cannot load {weights.checkpoint} as {name} weights ({exc})") from None
        self.model = model.eval().to(self.device, dtype=model_dtype(precision, runtime))
        self.transform = split_transform(transform)
        size = model.visual.image_size
        self.tower = ImageTower(self.model.visual, self.transform, tuple(size) if isinstance(size, (tuple, list))
                                else (size, size), precision, runtime, self.device)
        self.dim = int(open_clip.get_model_config(weights.arch)["embed_dim"])
        self._tokenizer: Callable[[list[str]], torch.Tensor] | None = None

    def encode_image_batch(self, batch):
        return unit_rows(self.tower(batch))

    def encode_texts(self, texts: list[str]):
        import numpy as np
        import open_clip

        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.arch)
        tokenize = self._tokenizer
        chunks = []
        with text_context(self.precision, self.runtime, self.device):
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = tokenize(texts[start:start + TEXT_BATCH]).to(self.device)
                chunks.append(self.model.encode_text(tokens).float().cpu().numpy())
        return unit_rows(np.concatenate(chunks)) if chunks else np.zeros((0, self.dim), np.float32)
