"""Process-wide settings that a call needs only while it runs, held safely when calls overlap on several threads.

A search limits BLAS to one thread per search thread, and the device scorer needs IEEE float32 matrix products
(no TF32 or bfloat16). Both are process-wide switches. Two overlapping calls that each saved and restored the
setting would leave it wrong: the first to finish restores the original while the other still runs, and the
second then "restores" the value the first had set, for good. A :class:`SharedSetting` counts its holders
instead: the first to enter applies the setting and keeps what it replaced, the last to leave restores that,
so the process ends as it began, however calls interleave. Applying and restoring run on one thread of the
setting's own, since OpenBLAS takes limits only from the thread that set them last.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

#: Applies a setting and returns what restores the value it replaced.
Apply = Callable[[], Callable[[], None]]


class SharedSetting:
    """A process-wide setting in force while at least one caller :meth:`holds <held>` it."""

    def __init__(self, apply: Apply, name: str):
        self._apply = apply
        self._lock = threading.Lock()
        self._holders = 0
        self._restore: Callable[[], None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"percept-{name}")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The setting, in force until the block ends (restored when the last holder leaves)."""
        with self._lock:
            if self._holders == 0:
                self._restore = self._thread.submit(self._apply).result()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._restore is not None:
                    restore, self._restore = self._restore, None
                    self._thread.submit(restore).result()


def _one_blas_thread() -> Callable[[], None]:
    """BLAS limited to one thread; returns what restores the limits it replaced."""
    from threadpoolctl import threadpool_limits

    held = contextlib.ExitStack()
    held.enter_context(threadpool_limits(1, user_api="blas"))
    return held.close


def _ieee_float32_products() -> Callable[[], None]:
    """Torch's float32 matrix products in full IEEE float32 (no TF32 on CUDA, no bfloat16 on CPUs that have
    it); returns what restores the precisions it replaced."""
    import torch

    switches = _float32_switches(torch)
    saved = [(settings, name, getattr(settings, name)) for settings, name, _ in switches]
    for settings, name, value in switches:
        setattr(settings, name, value)

    def restore() -> None:
        for settings, name, before in saved:
            setattr(settings, name, before)

    return restore


def _float32_switches(torch: ModuleType) -> list[tuple[object, str, object]]:
    """The switches that choose torch's float32 product precision, each with its full-precision value."""
    cuda, mkldnn = torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None)
    if not hasattr(cuda, "fp32_precision"):  # torch before 2.9
        return [(cuda, "allow_tf32", False)]
    return [(settings, "fp32_precision", "ieee") for settings in (cuda, mkldnn)
            if settings is not None and hasattr(settings, "fp32_precision")]


#: BLAS on one thread per search thread, while searches run their blocks on several threads.
ONE_BLAS_THREAD = SharedSetting(_one_blas_thread, "blas-limits")
#: Full float32 matrix products in torch, while device scorers screen with them.
IEEE_FLOAT32 = SharedSetting(_ieee_float32_products, "float32-precision")
