"""Find model weights on this machine only (never download) and name them by content."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from percept.errors import PerceptError

#: Checkpoint file names inside a folder, most preferred first (open_clip's order).
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def offline() -> None:
    """Keep Hugging Face libraries from reaching the network (unless the user set it otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (remembered per path, size and modification time)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """One identity for several weight files: sha256 over their names and contents."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}={file_sha256(path)}\n".encode())
    return "sha256:" + digest.hexdigest()


def checkpoint_in_dir(folder: Path) -> Path | None:
    """The checkpoint file open_clip would pick in ``folder``."""
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    found.sort(key=lambda p: p.suffix != ".safetensors")
    return found[0] if found else None


def hub_cache_dir() -> str:
    offline()
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_file(repo_id: str, filename: str) -> Path | None:
    """A file of a Hugging Face repository from the local cache, or None."""
    offline()
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hugging Face repository, or None."""
    offline()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None


def missing_weights(model: str, looked_for: str,
                    provide: str = "a checkpoint file or a folder holding one") -> PerceptError:
    """The one message for weights that are not on this machine."""
    return PerceptError(
        f"the weights of {model} are not on this machine (looked for {looked_for}) and are never downloaded: "
        f"give --pretrained PATH ({provide}), or put them in the Hugging Face cache ({hub_cache_dir()}; "
        "e.g. run `hf download REPO` where there is internet and copy the cache over); "
        "the built-in percept:tiny needs no files")


def local_path(pretrained: str | os.PathLike, model: str) -> Path:
    """``--pretrained`` as an existing path, or the clear error."""
    path = Path(pretrained).expanduser()
    if not path.exists():
        raise PerceptError(f"--pretrained {pretrained} for {model} does not exist: give a checkpoint file "
                           "or a folder holding one")
    return path
