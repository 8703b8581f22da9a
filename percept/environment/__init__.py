"""Environmental features: OpenStreetMap variables, prompts, prompt files, text vectors, combining."""

import importlib
import warnings

_MOVED = {"build_prompts": "prompts", "key_text": "prompts", "quintile_bins": "prompts", "PromptSet": "prompts",
          "PROMPT_STYLES": "prompts", "DEFAULT_PROMPT_STYLE": "prompts", "QUINTILE_WORDS": "prompts",
          "combine": "combining", "slerp_midpoint": "combining", "COMBINE_METHODS": "combining"}


def __getattr__(name):
    """Names of the old flat ``percept.environment`` module, for one release, with a warning."""
    if name not in _MOVED:
        raise AttributeError(f"module 'percept.environment' has no attribute {name!r}")
    module = f"percept.environment.{_MOVED[name]}"
    warnings.warn(f"percept.environment.{name} moved to {module}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)
