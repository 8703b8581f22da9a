"""Optional packages: import one, or stop with one line naming the extra that installs it.

``pip install percept`` brings the core (the drop-in, evaluate, rate and predict from stored embeddings);
the rest comes with extras: ``maps`` (matplotlib, h3), ``clip`` (torch and the CLIP encoders), ``web``,
``db``, ``city``, ``osm`` and ``ray``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from percept.errors import PerceptError


def require(extra: str, module: str, needed_for: str) -> ModuleType:
    """``module`` imported, or a PerceptError saying that ``needed_for`` needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise PerceptError(f"{needed_for} needs {package}, which is not installed: "
                           f"pip install 'percept[{extra}]'") from None
