"""Model names in clip-retrieval's convention, and one factory that resolves weights and builds encoders.

Parsing needs no torch; resolving finds the weights (and their identity) without building the
model, so a valid cache can be recognised cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from percept.encoders import builtin
from percept.encoders.base import Encoder
from percept.encoders.open_clip_backend import OPENAI_NAMES
from percept.errors import PerceptError

ACCEPTED = (
    f"percept:{' or percept:'.join(builtin.CONFIGS)} (built in, offline, no learned meaning); "
    "open_clip:ARCH or open_clip:ARCH/TAG (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k); "
    "hf_clip:ORG/NAME (e.g. hf_clip:openai/clip-vit-base-patch32); "
    f"or an OpenAI name ({', '.join(OPENAI_NAMES)})"
)


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: back end, architecture (or repository), pretrained tag."""

    name: str
    backend: str  # "percept", "open_clip" or "hf_clip"
    arch: str
    tag: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """A model whose weights were found: its identity, and how to build it on a device."""

    name: str
    weights_id: str
    build: Callable[[str | None], Encoder]

    def load(self, device: str | None = None) -> Encoder:
        return self.build(device)


def parse_model_name(name: str) -> ModelName:
    """Split a model name into its parts, or raise the error listing the accepted forms."""
    prefix, _, rest = name.partition(":")
    if name in OPENAI_NAMES:
        return ModelName(name, "open_clip", OPENAI_NAMES[name], "openai")
    if prefix == "percept" and rest in builtin.CONFIGS:
        return ModelName(name, "percept", rest)
    if prefix == "open_clip" and rest and rest.count("/") <= 1 and all(rest.split("/")):
        arch, _, tag = rest.partition("/")
        return ModelName(name, "open_clip", arch, tag or None)
    if prefix == "hf_clip" and rest.count("/") == 1 and all(rest.split("/")):
        return ModelName(name, "hf_clip", rest)
    raise PerceptError(f"unknown model name {name!r}: use {ACCEPTED}")


def resolve_model(name: str, pretrained: str | None = None) -> ResolvedModel:
    """Find the weights of ``name`` on this machine (``pretrained``: a local file or folder, or
    ``random`` for an untrained open_clip architecture)."""
    parsed = parse_model_name(name)
    if parsed.backend == "percept":
        if pretrained is not None:
            raise PerceptError(f"{name} is built in and takes no --pretrained weights")
        return ResolvedModel(name, builtin.weights_id(parsed.arch),
                             lambda device: builtin.BuiltinEncoder(parsed.arch))
    if parsed.backend == "open_clip":
        from percept.encoders import open_clip_backend

        weights = open_clip_backend.resolve(name, parsed.arch, parsed.tag, pretrained)
        return ResolvedModel(name, weights.weights_id,
                             lambda device: open_clip_backend.OpenClipEncoder(name, weights, device))
    from percept.encoders import hf_backend

    weights = hf_backend.resolve(name, parsed.arch, pretrained)
    return ResolvedModel(name, weights.weights_id, lambda device: hf_backend.HfClipEncoder(name, weights, device))
