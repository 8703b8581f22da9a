"""How much text a model reads: its context length and a token counter from its own tokenizer.

CLIP text towers read a fixed window (77 tokens for OpenAI and most open_clip models);
longer texts are cut. The built-in ``percept:*`` models read all text, so they have no
window. Only the tokenizer is loaded (never the model), and never from the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from percept.encoders.registry import parse_model_name
from percept.errors import PerceptError


@dataclass(frozen=True)
class TokenCounter:
    """A model's text window, and the number of tokens (start and end tokens included) of texts."""

    context_length: int
    count: Callable[[list[str]], np.ndarray]


def token_counter(model_name: str, pretrained: str | None = None) -> TokenCounter | None:
    """The token counter of ``model_name``, or None when the model reads all text (or no tokenizer is
    available on this machine)."""
    parsed = parse_model_name(model_name)
    if parsed.backend == "percept":
        return None
    try:
        if parsed.backend == "open_clip":
            return _open_clip_counter(parsed.arch)
        return _hf_counter(model_name, parsed.arch, pretrained)
    except (ImportError, OSError, ValueError, PerceptError):
        return None


def _open_clip_counter(arch: str) -> TokenCounter:
    import open_clip

    tokenizer = open_clip.get_tokenizer(arch)
    if hasattr(tokenizer, "encode"):  # CLIP's byte-pair tokenizer: its count plus start and end tokens
        return TokenCounter(int(tokenizer.context_length),
                            lambda texts: np.fromiter((len(tokenizer.encode(t)) + 2 for t in texts), np.int64,
                                                      len(texts)))
    inner = tokenizer.tokenizer  # open_clip's wrapper of a Hugging Face tokenizer
    return TokenCounter(int(tokenizer.context_length), _hf_count(inner))


def _hf_counter(model_name: str, repo: str, pretrained: str | None) -> TokenCounter:
    from transformers import AutoConfig, AutoTokenizer

    from percept.encoders import hf_backend

    folder = hf_backend.resolve(model_name, repo, pretrained).folder
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    window = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
    return TokenCounter(int(window or tokenizer.model_max_length), _hf_count(tokenizer))


def _hf_count(tokenizer) -> Callable[[list[str]], np.ndarray]:
    def count(texts: list[str]) -> np.ndarray:
        ids = tokenizer(list(texts), truncation=False)["input_ids"]
        return np.asarray([len(row) for row in ids], dtype=np.int64)

    return count
