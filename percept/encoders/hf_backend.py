"""Hugging Face CLIP models (``hf_clip:ORG/NAME``): transformers' CLIPModel from local files only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from percept.encoders.base import Encoder, unit_rows
from percept.encoders.pixels import PixelTransform
from percept.encoders.towers import ImageTower, model_dtype, text_context
from percept.encoders.weights import (
    files_sha256,
    hub_snapshot,
    local_path,
    missing_weights,
    offline,
)
from percept.errors import PerceptError

WEIGHT_SUFFIXES = (".safetensors", ".bin")
TEXT_BATCH = 256
FOLDER = "a folder saved by transformers: config.json, model.safetensors, tokenizer and preprocessor files"


@dataclass(frozen=True)
class HfWeights:
    folder: Path
    weights_id: str


def resolve(model: str, repo: str, pretrained: str | None) -> HfWeights:
    """The local folder of ``repo`` (``--pretrained`` or the Hugging Face cache) and its identity."""
    if pretrained is not None:
        folder = local_path(pretrained, model)
        if not folder.is_dir():
            raise PerceptError(f"--pretrained for {model} must be {FOLDER}, not a file")
    else:
        snapshot = hub_snapshot(repo)
        if snapshot is None:
            raise missing_weights(model, f"Hugging Face repository {repo}", FOLDER)
        folder = snapshot
    files = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if not files or not (folder / "config.json").is_file():
        raise missing_weights(model, f"config.json and model.safetensors in {folder}", FOLDER)
    return HfWeights(folder, files_sha256(files))


class ResizeCrop:
    """PIL image → the model's own resize (shorter side to ``size``, bicubic) and centre crop; picklable. It does
    the same to (..., 3, H, W) uint8 tensors (torchvision's resize antialiases them as PIL does)."""

    takes_tensors = True

    def __init__(self, size: int, crop: tuple[int, int]):
        self.size, self.crop = size, crop

    def __call__(self, image):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = F.resize(image, self.size, interpolation=InterpolationMode.BICUBIC)
        return F.center_crop(image, list(self.crop))


def _transform(folder: Path) -> tuple[PixelTransform, tuple[int, int]]:
    """The model's image transform and the (height, width) of its crop."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    sizes = processor.size or {}
    size = sizes.get("shortest_edge") or sizes.get("height")
    if size is None:
        raise ValueError("its preprocessor_config.json names no image size")
    crop_size = processor.crop_size or {"height": size, "width": size}
    crop = (int(crop_size["height"]), int(crop_size["width"]))
    steps = ResizeCrop(int(size), crop)
    return PixelTransform(steps, processor.image_mean, processor.image_std, max(int(size), *crop)), crop


def image_transform(name: str, weights: HfWeights) -> PixelTransform:
    """The model's image transform read from its preprocessor settings alone (its weights stay on disk)."""
    offline()
    try:
        return _transform(weights.folder)[0]
    except (OSError, ValueError) as exc:
        raise PerceptError(f"cannot read the preprocessing settings of {name} from {weights.folder} ({exc})") from None


def _features(output):
    """transformers 5 returns an output object, earlier versions a tensor."""
    return output if hasattr(output, "float") else output.pooler_output


def _image_features(model):
    """The model's image tower as a module: normalised pixels → image features."""
    import torch

    class ImageFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return _features(self.model.get_image_features(pixel_values=pixel_values))

    return ImageFeatures()


class HfClipEncoder(Encoder):
    """A transformers CLIPModel in eval mode, in ``precision`` (fp32, bf16 or fp16) on ``runtime`` (torch or
    openvino)."""

    def __init__(self, name: str, weights: HfWeights, device: str | None = None, precision: str = "fp32",
                 runtime: str = "torch"):
        offline()
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.name, self.weights_id = name, weights.weights_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision, self.runtime = precision, runtime
        try:
            model = CLIPModel.from_pretrained(weights.folder, local_files_only=True)
            self.transform, crop = _transform(weights.folder)
            self.tokenizer = AutoTokenizer.from_pretrained(weights.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise PerceptError(f"cannot load {name} from {weights.folder} ({exc})") from None
        self.model = model.eval().to(self.device, dtype=model_dtype(precision, runtime))
        self.tower = ImageTower(_image_features(self.model), self.transform, crop, precision, runtime, self.device)
        dim = model.config.projection_dim
        if dim is None:
            raise PerceptError(f"cannot load {name} from {weights.folder} (its config.json names no projection_dim)")
        self.dim = int(dim)

    def encode_image_batch(self, batch):
        return unit_rows(self.tower(batch))

    def encode_texts(self, texts: list[str]):
        import numpy as np

        chunks = []
        with text_context(self.precision, self.runtime, self.device):
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(texts[start:start + TEXT_BATCH], padding=True, truncation=True,
                                        return_tensors="pt").to(self.device)
                chunks.append(_features(self.model.get_text_features(**tokens)).float().cpu().numpy())
        return unit_rows(np.concatenate(chunks)) if chunks else np.zeros((0, self.dim), np.float32)
