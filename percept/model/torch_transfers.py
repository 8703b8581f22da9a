"""Moving rows to a torch device and results back without waiting for either.

On CUDA, a thread of its own puts the next chunk's rows in pinned (page-locked) host memory and copies them on
a stream of its own, while the device computes this chunk; results come back into pinned memory,
asynchronously, and are read once their copy's event has passed. On other devices (the CPU) both are plain
copies.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Upload:
    """Rows on their way to the device: usable on the compute stream after :meth:`Transfers.arrived`."""

    rows: Tensor | Future[tuple[Tensor, torch.cuda.Event]]


@dataclass
class Download:
    """Results on their way back: read them with :meth:`Transfers.received`."""

    host: Tensor
    done: torch.cuda.Event | None = None


class Transfers:
    """Asynchronous copies between the host and ``device``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self._copier = ThreadPoolExecutor(1, thread_name_prefix="percept-upload") if self.cuda else None

    def send(self, array: np.ndarray) -> Upload:
        """Starts copying ``array`` (as stored) to the device."""
        array = np.ascontiguousarray(array)
        host = torch.from_numpy(array if array.flags.writeable else array.copy())
        if self._copier is None:
            return Upload(host.to(self.device))
        return Upload(self._copier.submit(self._upload, host))

    def _upload(self, host: Tensor) -> tuple[Tensor, torch.cuda.Event]:
        """Pins ``host`` and copies it on the copy stream; returns the device rows and the copy's event."""
        pinned = host.pin_memory()
        with torch.cuda.stream(self.stream):
            rows = pinned.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return rows, done

    def arrived(self, upload: Upload) -> Tensor:
        """The uploaded rows, once the compute stream has waited for their copy."""
        if isinstance(upload.rows, Tensor):
            return upload.rows
        rows, done = upload.rows.result()
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        rows.record_stream(current)  # its memory is not reused before the compute stream is done with it
        return rows

    def fetch(self, results: Tensor) -> Download:
        """Starts copying ``results`` back to the host (into pinned memory on CUDA)."""
        if not self.cuda:
            return Download(results.cpu())
        host = results.to("cpu", non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        return Download(host, done)

    @staticmethod
    def received(download: Download) -> np.ndarray:
        """The downloaded results, once their copy has finished."""
        if download.done is not None:
            download.done.synchronize()
        return download.host.numpy()
