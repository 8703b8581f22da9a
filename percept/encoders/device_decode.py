"""JPEG files decoded on the GPU (nvJPEG, through ``torchvision.io.decode_jpeg``), then turned upright, resized
and cropped there as the model's own transform does on the CPU.

Decoding workers only read each file and its header (:func:`read_for_device`): a complete JPEG file in RGB
or greyscale within the size limits goes to the GPU as bytes with its EXIF orientation; any other file
takes the CPU path there and then (:func:`percept.encoders.stages.read_image`: PIL, JPEG files drafted),
which also gives the reasons unreadable files are listed with. The main process decodes a batch's bytes
together (:class:`DeviceJpegDecoder`); a file the GPU decoder refuses is read on the CPU path instead, so
every image is encoded or skipped for the same reasons either way. Pixels stay 8-bit until the model
normalises them.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from percept.data.decode import DEFAULT_LIMITS, check_size
from percept.encoders.pixels import tensor_steps
from percept.encoders.stages import read_image

if TYPE_CHECKING:
    import torch

EXIF_ORIENTATION = 0x0112
#: PIL modes of the JPEG files the GPU decodes as PIL does (YCbCr and greyscale; not CMYK).
DEVICE_MODES = frozenset({"RGB", "L"})
#: At most this many decoded pixels (3 bytes each) are held on the device at once: a batch of very large
#: photographs is decoded, resized and cropped a slice at a time.
DECODE_PIXELS = 1 << 27
START_OF_IMAGE, END_OF_IMAGE = b"\xff\xd8\xff", b"\xff\xd9"


@dataclass(frozen=True)
class JpegFile:
    """A JPEG file read for the GPU decoder: its path, its bytes, pixels and EXIF orientation. The bytes travel
    from the worker as bytes (pickled with the batch): a tensor each would hold a shared-memory handle each."""

    path: str
    data: bytes
    pixels: int
    orientation: int


class DeviceBatch(NamedTuple):
    """A collated batch: the JPEG files for the GPU, the images the workers decoded on the CPU path (stacked
    8-bit pixels) and the unreadable ones (``{position: reason}``)."""

    jpeg_positions: list[int]
    jpegs: list[JpegFile]
    positions: list[int]
    pixels: torch.Tensor | None
    failed: dict[int, str]


def device_header(data: bytes) -> tuple[int, int] | None:
    """(pixels, EXIF orientation) of a JPEG file the GPU decodes as the CPU path would: complete (ends with its
    end-of-image marker), YCbCr or greyscale, one frame, within the size limits. None for any other file."""
    from PIL import Image

    if not data.startswith(START_OF_IMAGE) or not data.rstrip(b"\0").endswith(END_OF_IMAGE):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            check_size(*image.size, DEFAULT_LIMITS, "the image")
            if image.format != "JPEG" or image.mode not in DEVICE_MODES:  # MPO (extra frames), CMYK
                return None
            return image.width * image.height, int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - the CPU path reads the file again and names what is wrong with it
        return None


def read_for_device(path: str | Path, transform):
    """Decoding worker: ``(JpegFile, None)`` for a JPEG file the GPU decodes, else the CPU path's
    ``(pixels, None)`` or ``(None, reason)``."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return read_image(path, transform)
    found = device_header(data)
    if found is None:
        return read_image(path, transform)
    return JpegFile(str(path), data, *found), None


def collate_for_device(items) -> DeviceBatch:
    """``(position, JpegFile or pixels or None, reason or None)`` items → a :class:`DeviceBatch`."""
    import torch

    jpegs = [(position, item) for position, item, _ in items if isinstance(item, JpegFile)]
    decoded = [(position, item) for position, item, _ in items if item is not None and not isinstance(item, JpegFile)]
    failed = {position: reason for position, item, reason in items if item is None}
    return DeviceBatch([p for p, _ in jpegs], [j for _, j in jpegs], [p for p, _ in decoded],
                       torch.stack([t for _, t in decoded]) if decoded else None, failed)


def upright(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """(..., H, W) pixels turned as EXIF ``orientation`` asks, as PIL's ``ImageOps.exif_transpose`` turns images."""
    h, w = pixels.dim() - 2, pixels.dim() - 1
    turns = {
        2: lambda x: x.flip(w),
        3: lambda x: x.flip(h, w),
        4: lambda x: x.flip(h),
        5: lambda x: x.transpose(h, w),
        6: lambda x: x.rot90(-1, (h, w)),
        7: lambda x: x.transpose(h, w).flip(h, w),
        8: lambda x: x.rot90(1, (h, w)),
    }
    turn = turns.get(orientation)
    return pixels if turn is None else turn(pixels)


def decode_jpegs(files: list[bytes], device: str) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB pixels on ``device`` of each JPEG file's bytes; None for a file the decoder refuses. A
    batch is decoded in one call; when that fails, file by file."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(one), dtype=torch.uint8) for one in files]
    with warnings.catch_warnings():  # torchvision 0.29 marks its image decoders as moving to torchcodec
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            if len(files) == 1:
                return [None]
    return [decode_jpegs([one], device)[0] for one in files]


def _slices(jpegs: list[JpegFile]) -> list[range]:
    """Consecutive index ranges of ``jpegs`` holding at most :data:`DECODE_PIXELS` pixels each (at least one file)."""
    slices, start, total = [], 0, 0
    for index, jpeg in enumerate(jpegs):
        if index > start and total + jpeg.pixels > DECODE_PIXELS:
            slices.append(range(start, index))
            start, total = index, 0
        total += jpeg.pixels
    if jpegs:
        slices.append(range(start, len(jpegs)))
    return slices


class DeviceJpegDecoder:
    """A :class:`DeviceBatch` → (positions, (n, 3, H, W) uint8 pixels on ``device`` in position order, or None,
    ``{position: reason}``), as :func:`percept.encoders.stages.stack_readable` gives for the CPU path."""

    def __init__(self, transform, steps, device: str):
        self.transform, self.steps, self.device = transform, steps, device

    def __call__(self, batch: DeviceBatch):
        import torch

        pixels: dict[int, torch.Tensor] = {}
        failed = dict(batch.failed)
        for part in _slices(batch.jpegs):
            positions = [batch.jpeg_positions[i] for i in part]
            jpegs = [batch.jpegs[i] for i in part]
            decoded = decode_jpegs([jpeg.data for jpeg in jpegs], self.device)
            turned = {}
            for position, jpeg, image in zip(positions, jpegs, decoded):
                if image is not None:
                    turned[position] = upright(image, jpeg.orientation)
                    continue
                tensor, reason = read_image(jpeg.path, self.transform)
                if tensor is None:
                    failed[position] = reason
                else:
                    pixels[position] = tensor.to(self.device)
            pixels.update(self._resized(turned))
        if batch.pixels is not None:
            pixels.update(zip(batch.positions, batch.pixels.to(self.device, non_blocking=True)))
        positions = sorted(pixels)
        return positions, torch.stack([pixels[p] for p in positions]) if positions else None, failed

    def _resized(self, images: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The model's resize and crop of each image, images of one size in one call."""
        import torch

        by_size: dict[tuple, list[int]] = defaultdict(list)
        for position, image in images.items():
            by_size[tuple(image.shape)].append(position)
        out: dict[int, torch.Tensor] = {}
        for positions in by_size.values():
            out.update(zip(positions, self.steps(torch.stack([images[p] for p in positions]))))
        return out


def _probe_jpeg() -> bytes:
    """A small JPEG file, decoded once to learn whether the device decodes at all."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 140, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


def device_decoder(transform, device: str) -> DeviceJpegDecoder | None:
    """The GPU decoder for ``transform``'s model on ``device``, or None where JPEG files are better decoded on the
    CPU: not a CUDA device, a transform whose steps work on PIL images only, or a torchvision without nvJPEG."""
    steps = tensor_steps(transform)
    if not device.startswith("cuda") or steps is None or decode_jpegs([_probe_jpeg()], device)[0] is None:
        return None
    return DeviceJpegDecoder(transform, steps, device)
