"""How batches of images reach the encoder's device.

On the CPU, the decoding workers' batches go to the model as they come. On CUDA, a thread loads each
batch onto the device on a second CUDA stream while the model runs the batch before (:func:`prefetched`):
pinned 8-bit pixels copied without blocking or, where the GPU decodes JPEG files
(:mod:`percept.encoders.device_decode`), the files' bytes decoded, resized and cropped there. The
model's stream waits for a batch's copy only when it takes that batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from percept.encoders.device_decode import collate_for_device, device_decoder, read_for_device
from percept.encoders.stages import read_image, stack_readable
from percept.read_ahead import read_ahead

#: Batches loaded on the device ahead of the one the model runs.
AHEAD = 2


@dataclass(frozen=True)
class Feed:
    """``read`` (a path → a worker's item, picklable) and ``collate`` run in the decoding workers; ``load`` turns a
    collated batch into (positions, pixels on the device, ``{position: reason}``) on the prefetching thread
    (None: the batches are used as they come, on the CPU)."""

    read: Callable
    collate: Callable
    load: Callable | None
    device: str
    describe: str

    def batches(self, loader: Iterable) -> Iterator:
        """The collated batches of ``loader`` ready for the model, in order."""
        return iter(loader) if self.load is None else prefetched(loader, self.load, self.device)


def to_device(batch, device: str):
    """A :func:`percept.encoders.stages.stack_readable` batch with its pixels copied to ``device`` without blocking
    (from pinned memory: the decoding workers' batches are pinned)."""
    positions, pixels, failed = batch
    return positions, None if pixels is None else pixels.to(device, non_blocking=True), failed


def feed_for(encoder) -> Feed:
    """The feed of ``encoder``: decoding on the CPU path as batches of 8-bit pixels, except JPEG files where its
    device decodes them (CUDA with nvJPEG, a model whose resize and crop run on tensors)."""
    transform, device = encoder.transform, encoder.device
    cpu_read = partial(read_image, transform=transform)
    if not device.startswith("cuda"):
        return Feed(cpu_read, stack_readable, None, device, "decoded on the CPU")
    decoder = device_decoder(transform, device)
    if decoder is None:
        return Feed(cpu_read, stack_readable, partial(to_device, device=device), device,
                    "decoded on the CPU, prefetched to the GPU")
    return Feed(partial(read_for_device, transform=transform), collate_for_device, decoder, device,
                "JPEG files decoded on the GPU, prefetched")


class _Lane:
    """Where batches are loaded: in line on the CPU; on CUDA, on a second stream that the consumer's stream waits
    for, batch by batch."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda")
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None

    def context(self):
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        if self.stream is not None:
            stack.enter_context(torch.cuda.device(self.device))
            stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def mark(self):
        """An event after everything queued so far for the batch just loaded (None on the CPU)."""
        return None if self.stream is None else self.stream.record_event()

    def hand_over(self, loaded, event):
        """``loaded`` for use on the consumer's current stream, once the load has finished there."""
        import torch

        if event is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(event)
            for tensor in _tensors(loaded):
                if tensor.is_cuda:
                    tensor.record_stream(consumer)  # its memory is not reused before the consumer is done with it
        return loaded


def _tensors(value) -> Iterator:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def prefetched(batches: Iterable, load: Callable[[Any], Any], device: str, ahead: int = AHEAD) -> Iterator:
    """``load(batch)`` of each batch in order, computed on a thread up to ``ahead`` batches before the consumer
    takes them (and one more being loaded): on CUDA on a second stream, each handed over when its copy is
    complete on the consumer's stream. An error in ``batches`` or ``load`` is raised to the consumer where that
    batch was due."""
    lane = _Lane(device)
    loaded = ((load(batch), lane.mark()) for batch in batches)
    for item in read_ahead(loaded, ahead + 1, context=lane.context, name="percept-prefetch"):
        yield lane.hand_over(*item)
