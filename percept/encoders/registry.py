"""Model names in clip-retrieval's convention, and one factory that resolves weights and builds encoders.

Parsing needs no torch; resolving finds the weights (and their identity) without building the
model, so a valid cache can be recognised cheaply. A resolved model also gives its image transform
alone (:meth:`ResolvedModel.load_transform`), read from its settings without loading its weights: what
a process that only prepares images for workers (the Ray engine's driver) needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from percept.encoders import builtin
from percept.encoders.base import Encoder
from percept.encoders.open_clip_backend import OPENAI_NAMES
from percept.encoders.precision import check_precision, default_device, resolve_precision, resolve_runtime
from percept.errors import PerceptError
from percept.extras import require

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
    """A model whose weights were found: its identity, the precision and runtime it encodes in, how to
    build it on a device, and how to build its image transform alone."""

    name: str
    weights_id: str
    build: Callable[[str | None], Encoder]
    transform_only: Callable[[], Callable]
    precision: str = "fp32"
    runtime: str = "torch"

    def load(self, device: str | None = None) -> Encoder:
        require("clip", "torch", f"encoding with {self.name}")
        return self.build(device)

    def load_transform(self) -> Callable:
        """The :attr:`Encoder.transform` the loaded model would have (the same pixels for every image), built from
        the model's preprocessing settings (image size, resize and crop, mean and std, draft size) without its
        weights."""
        require("clip", "torch", f"preparing images for {self.name}")
        return self.transform_only()


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


def resolve_model(name: str, pretrained: str | None = None, precision: str = "auto", runtime: str = "auto",
                  device: str | None = None) -> ResolvedModel:
    """Find the weights of ``name`` on this machine (``pretrained``: a local file or folder, or
    ``random`` for an untrained open_clip architecture), and settle the precision and runtime
    (:mod:`percept.encoders.precision`) for ``device`` (None: CUDA where present, else the CPU).

    The built-in models compute in float64 with numpy: they take ``auto`` or ``fp32`` only.
    """
    parsed = parse_model_name(name)
    check_precision(precision)
    if parsed.backend == "percept":
        if pretrained is not None:
            raise PerceptError(f"{name} is built in and takes no --pretrained weights")
        if precision not in ("auto", "fp32"):
            raise PerceptError(f"{name} is built in and computes in float64: leave out --precision {precision} "
                               "(or give auto)")
        return ResolvedModel(name, builtin.weights_id(parsed.arch), lambda device: builtin.BuiltinEncoder(parsed.arch),
                             lambda: builtin.SquareTransform(builtin.CONFIGS[parsed.arch].image_size),
                             builtin.BuiltinEncoder.precision, builtin.BuiltinEncoder.runtime)
    for module in ("torch", "open_clip" if parsed.backend == "open_clip" else "transformers"):
        require("clip", module, f"the CLIP model {name}")
    device = device or default_device()
    precision, runtime = resolve_precision(precision, device), resolve_runtime(runtime, device)
    settings = {"precision": precision, "runtime": runtime}
    if parsed.backend == "open_clip":
        from percept.encoders import open_clip_backend

        weights = open_clip_backend.resolve(name, parsed.arch, parsed.tag, pretrained)
        return ResolvedModel(name, weights.weights_id, lambda device: open_clip_backend.OpenClipEncoder(
            name, weights, device, **_settings_for(device, settings)),
            lambda: open_clip_backend.image_transform(weights), precision, runtime)
    from percept.encoders import hf_backend

    hf_weights = hf_backend.resolve(name, parsed.arch, pretrained)
    return ResolvedModel(name, hf_weights.weights_id, lambda device: hf_backend.HfClipEncoder(
        name, hf_weights, device, **_settings_for(device, settings)),
        lambda: hf_backend.image_transform(name, hf_weights), precision, runtime)


def _settings_for(device: str | None, settings: dict) -> dict:
    """The resolved precision and runtime for a model built on ``device``: OpenVINO runs on the CPU only, so a
    model built on CUDA (a Ray actor on a GPU) runs the same precision on torch."""
    if device is not None and device != "cpu" and settings["runtime"] == "openvino":
        return {**settings, "runtime": "torch"}
    return settings
