"""Images as the model's own resize and crop leave them: 8-bit pixels, normalised inside the model.

A :class:`PixelTransform` runs a model's resize and crop on a PIL image and returns its 8-bit
pixels (C, H, W); the model's mean and standard deviation are applied by :class:`Normalised` in
the model's first step. Decoding workers then pass a quarter of the bytes a float tensor has and
skip two passes over every pixel. ``draft_size`` is the smallest side the resize needs: JPEG
files are decoded at the smallest scale not below it (:func:`percept.encoders.stages.read_image`).
:func:`tensor_steps` gives the same resize and crop for pixels already on a device (JPEG files decoded on
the GPU: :mod:`percept.encoders.device_decode`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class PixelTransform:
    """PIL image → (3, H, W) uint8 tensor through ``steps`` (the model's resize and crop); picklable."""

    def __init__(self, steps: Callable, mean: Sequence[float], std: Sequence[float], draft_size: int | None):
        self.steps, self.mean, self.std, self.draft_size = steps, tuple(mean), tuple(std), draft_size

    def __call__(self, image):
        from torchvision.transforms.functional import pil_to_tensor

        if image.mode != "RGB":
            image = image.convert("RGB")
        return pil_to_tensor(self.steps(image))


def _sizes(step) -> list[int]:
    size = getattr(step, "size", None)
    if size is None:
        return []
    return [int(size)] if isinstance(size, int) else [int(s) for s in size]


def split_transform(transform) -> PixelTransform:
    """A torchvision ``Compose`` that ends in to-tensor and ``Normalize`` (as open_clip's do) as a PixelTransform
    of the steps before them; the draft size is the largest size its resize and crop name."""
    from torchvision.transforms import Compose, Normalize

    steps = list(transform.transforms)
    if len(steps) < 2 or not isinstance(steps[-1], Normalize) or "ToTensor" not in type(steps[-2]).__name__:
        raise ValueError(f"cannot split the image transform {transform!r}")
    sizes = [s for step in steps[:-2] for s in _sizes(step)]
    return PixelTransform(Compose(steps[:-2]), steps[-1].mean, steps[-1].std, max(sizes, default=None))


def _flat(step) -> list:
    """The steps of nested ``Compose`` objects, in order."""
    from torchvision.transforms import Compose

    return [inner for part in step.transforms for inner in _flat(part)] if isinstance(step, Compose) else [step]


def _takes_tensors(step) -> bool:
    """Whether ``step`` does to a (..., 3, H, W) uint8 tensor what it does to a PIL image: torchvision's resize (with
    antialiasing, as PIL always resizes) and centre crop, and steps that say so (``takes_tensors``)."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    if isinstance(step, Resize):
        return (step.max_size is None and step.antialias is not False
                and step.interpolation in (InterpolationMode.BICUBIC, InterpolationMode.BILINEAR))
    return isinstance(step, CenterCrop) or getattr(step, "takes_tensors", False)


def tensor_steps(transform):
    """The resize and crop of a :class:`PixelTransform` as one callable on (..., 3, H, W) uint8 tensors on any
    device, or None where a step works on PIL images only (or ``transform`` is no PixelTransform). open_clip's
    conversion to RGB is left out: decoded pixels are RGB already."""
    from torchvision.transforms import Compose

    if not isinstance(transform, PixelTransform):
        return None
    steps = [step for step in _flat(transform.steps)
             if not (type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB")]
    return Compose(steps) if all(_takes_tensors(step) for step in steps) else None


def normalised(tower, mean: Sequence[float], std: Sequence[float], dtype=None):
    """``tower`` behind the model's normalisation (in float32, then cast to ``dtype``, the tower's), taking
    pixels from 0 to 255 of any dtype."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower = tower
            self.register_buffer("offset", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
            self.register_buffer("scale", 1 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255))

        def forward(self, pixels):
            return self.tower(((pixels.float() - self.offset) * self.scale).to(dtype or torch.float32))

    return Normalised()
