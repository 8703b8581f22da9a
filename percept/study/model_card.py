"""The model card: what made a published model, and how far its numbers can be trusted.

A card is plain JSON (stored in the model file as ``percept_card``) and Markdown beside it
(``FILE.card.md``). It records the software, the encoder, SHA-256 digests of every input file,
the filters, the images and ratings used and dropped per category, the cross-validation scheme,
K and how it was chosen, the scores with 95 % intervals where an evaluation gave them, the
intervals' coverage on the folds and the survey's domain. Its ``id`` is a digest of all of that
(and of the model's arrays), so any change to an input or a setting gives another id; ``rate``,
``map`` and the report carry the id into their outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from percept import __version__

CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of one file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | Path, names: Iterable[str] = ("img_emb", "metadata", "text_emb")) -> str | None:
    """SHA-256 over every file under ``folder``'s embedding sub-folders (relative name and content), or None."""
    folder = Path(folder)
    files = sorted(p for name in names if (folder / name).is_dir() for p in (folder / name).rglob("*") if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + file_digest(path).encode() + b"\n")
    return digest.hexdigest()


def card_id(card: dict, arrays_digest: str) -> str:
    """A short digest of the card's content and the model's arrays."""
    content = json.dumps({k: v for k, v in card.items() if k != "id"}, sort_keys=True, default=str)
    return hashlib.sha256((content + arrays_digest).encode()).hexdigest()[:16]


def arrays_digest(arrays: Iterable) -> str:
    """SHA-256 over the bytes of the model's arrays, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B"))
    return digest.hexdigest()


def build_card(*, clip_model: str | None, weights_id: str | None, inputs: dict, filters: dict, data: dict,
               model: dict, evaluation: dict | None, calibration: dict | None, domain: dict | None,
               arrays_sha: str) -> dict:
    """The card as a JSON-ready dict, with its id."""
    card = {"software": {"name": "percept", "version": __version__},
            "encoder": {"clip_model": clip_model, "weights_id": weights_id},
            "inputs": inputs, "filters": filters, "data": data, "model": model,
            "evaluation": evaluation, "calibration": calibration, "domain": domain}
    card["id"] = card_id(card, arrays_sha)
    return card


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def card_markdown(card: dict) -> str:
    """The card as Markdown for people."""
    lines = [f"# Model card {card['id']}", "",
             f"Made by percept {card['software']['version']} with the CLIP model "
             f"`{card['encoder']['clip_model']}` (weights: {card['encoder']['weights_id'] or 'not recorded'}).", "",
             "## Inputs (SHA-256)", ""]
    lines += [f"- {name}: `{value['path']}` {value['sha256'] or '(no files)'}"
              for name, value in card["inputs"].items()]
    active = {k: v for k, v in card["filters"].items() if v not in (None, [], "")}
    lines += ["", "## Filters", "", ", ".join(f"{k}: {v}" for k, v in active.items()) if active else "none", "",
              "## Data per category", "", "| category | samples | images | dropped images | dropped ratings |",
              "| --- | --- | --- | --- | --- |"]
    for category, row in card["data"].items():
        lines.append(f"| {category} | {row['samples']} | {row['images']} | {_fmt(row.get('dropped_images'))} | "
                     f"{_fmt(row.get('dropped_ratings'))} |")
    model = card["model"]
    lines += ["", "## Model", "", f"K = {model['k']} ({model['k_choice']}); weighting {model['weighting']}; "
              f"environmental features: {model['environment'] or 'none'}."]
    evaluation = card.get("evaluation")
    if evaluation:
        lines += ["", "## Evaluation", "", evaluation.get("scheme", ""), "",
                  "| category | MSE | 95 % interval | R² | 95 % interval |", "| --- | --- | --- | --- | --- |"]
        for category, row in evaluation.get("scores", {}).items():
            lines.append(f"| {category} | {_fmt(row.get('mse'))} | {_interval(row.get('mse_ci'))} | "
                         f"{_fmt(row.get('r2'))} | {_interval(row.get('r2_ci'))} |")
    calibration = card.get("calibration")
    if calibration:
        lines += ["", "## Prediction intervals", "",
                  f"Calibrated on out-of-fold predictions, {calibration['folds']} folds grouped by "
                  f"{calibration['group_by']} (seed {calibration['seed']}). Coverage of the "
                  f"{calibration['level']:.0%} intervals on the folds (each fold calibrated on the others):", "",
                  "| category | coverage | in the domain | outside it | mean width |",
                  "| --- | --- | --- | --- | --- |"]
        for category, row in calibration["coverage"].items():
            lines.append(f"| {category} | {_share(row['coverage'])} | {_share(row['coverage_in_domain'])} "
                         f"(n={row['samples_in_domain']}) | {_share(row['coverage_out_of_domain'])} "
                         f"(n={row['samples_out_of_domain']}) | {_fmt(row['mean_width'], 2)} |")
    domain = card.get("domain")
    if domain:
        lines += ["", "## The survey's domain", "",
                  f"Threshold (5th percentile of nearest-other similarity over {domain['distinct_images']} distinct "
                  f"images): {_fmt(domain['threshold'])}; mean nearest-other distance {_fmt(domain['mean_distance'])}."]
    return "\n".join(lines) + "\n"


def _interval(pair) -> str:
    return "n/a" if not pair else f"{pair[0]:.4f} – {pair[1]:.4f}"


def _share(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"
