"""The results log: one CSV row per category and K, appended in the original tool's format."""

from __future__ import annotations

from pathlib import Path

from percept.atomic import append_text
from percept.study.holdout import HoldoutResult

COLUMNS = (
    ("category", "walkability, bikeability, pleasantness, greenness or safety"),
    ("model", "the CLIP model name as given to -M/--clip-model"),
    ("k", "the number of neighbours"),
    ("random", "random=False (no shuffle), random=<seed>, or random=True (shuffled with seed 0)"),
    ("stratified", "stratified=True or stratified=False"),
    ("train", "training samples (stratified: one count per score bin, a+b+c+d+e)"),
    ("test", "test samples (likewise)"),
    ("mse", "mean squared error on the test samples"),
    ("r2", "coefficient of determination (R²) on the test samples"),
    ("weighting", "the --normalization-method"),
    ("env", "env=None, or env=<method>+p<prompt style>[+clauses] with --environmental"),
)


def columns_help() -> str:
    """The columns of a results-log row, for --help."""
    return "; ".join(f"{i}. {name}" for i, (name, _) in enumerate(COLUMNS, 1))


def randomness_label(randomize: bool, seed: int) -> str:
    """``random=False``, ``random=<seed>``, or ``random=True`` (randomised with seed 0, the default)."""
    if not randomize:
        return "random=False"
    return f"random={seed}" if seed else "random=True"


def log_row(result: HoldoutResult, model: str, randomness: str, stratified: bool, weighting: str,
            environment: str | None) -> str:
    train, test = result.split.describe_counts()
    fields = [result.category, model, str(result.k), randomness, f"stratified={stratified}", train, test,
              repr(result.mse), repr(result.r2), weighting, f"env={environment}"]
    return ",".join(fields)


def append_rows(path: str | Path, rows: list[str]) -> None:
    """Append the rows to the CSV file (created if missing) without ever leaving it half-written."""
    if rows:
        append_text(path, "".join(row + "\n" for row in rows))
