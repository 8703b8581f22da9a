"""Hugging Face CLIP models (``hf_clip:ORG/NAME``): transformers' CLIPModel from local files only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from percept.encoders.base import Encoder, unit_rows
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
        folder = hub_snapshot(repo)
        if folder is None:
            raise missing_weights(model, f"Hugging Face repository {repo}", FOLDER)
    files = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if not files or not (folder / "config.json").is_file():
        raise missing_weights(model, f"config.json and model.safetensors in {folder}", FOLDER)
    return HfWeights(folder, files_sha256(files))


class ImageProcessorTransform:
    """PIL image → CHW tensor with the model's own resize, centre crop and normalisation."""

    def __init__(self, size: int, crop: tuple[int, int], mean, std):
        self.size, self.crop, self.mean, self.std = size, crop, list(mean), list(std)

    def __call__(self, image):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = F.resize(image.convert("RGB"), self.size, interpolation=InterpolationMode.BICUBIC)
        image = F.center_crop(image, list(self.crop))
        return F.normalize(F.to_tensor(image), self.mean, self.std)


def _transform(folder: Path) -> ImageProcessorTransform:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    size = processor.size.get("shortest_edge") or processor.size.get("height")
    crop = processor.crop_size or {"height": size, "width": size}
    return ImageProcessorTransform(int(size), (int(crop["height"]), int(crop["width"])),
                                   processor.image_mean, processor.image_std)


def _features(output):
    """transformers 5 returns an output object, earlier versions a tensor."""
    return output if hasattr(output, "float") else output.pooler_output


class HfClipEncoder(Encoder):
    """A transformers CLIPModel in eval mode; half precision on CUDA."""

    def __init__(self, name: str, weights: HfWeights, device: str | None = None):
        offline()
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.name, self.weights_id = name, weights.weights_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        try:
            model = CLIPModel.from_pretrained(weights.folder, local_files_only=True)
            self.transform = _transform(weights.folder)
            self.tokenizer = AutoTokenizer.from_pretrained(weights.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise PerceptError(f"cannot load {name} from {weights.folder} ({exc})") from None
        self.model = model.eval().to(self.device, dtype=self.dtype)
        self.dim = int(model.config.projection_dim)

    def encode_image_batch(self, batch):
        import torch

        with torch.inference_mode():
            output = self.model.get_image_features(pixel_values=batch.to(self.device, dtype=self.dtype))
        return unit_rows(_features(output).float().cpu().numpy())

    def encode_texts(self, texts: list[str]):
        import numpy as np
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(texts[start:start + TEXT_BATCH], padding=True, truncation=True,
                                        return_tensors="pt").to(self.device)
                chunks.append(_features(self.model.get_text_features(**tokens)).float().cpu().numpy())
        return unit_rows(np.concatenate(chunks)) if chunks else np.zeros((0, self.dim), np.float32)
