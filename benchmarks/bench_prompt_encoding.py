"""Text vectors for 20,000 style-1 prompts with a CLIP-sized model: clause by clause versus whole prompts.

The model is open_clip ViT-B-32 with random weights (no download; the arithmetic is the
same as with trained weights), on the CPU. Clause encoding encodes each distinct
``<variable> is <value>`` clause once and averages; whole-prompt encoding encodes every
prompt, of which the 77-token window keeps only the first few variables.
"""

from __future__ import annotations

import time

from benchmarks.bench_prompts import make_features
from percept.encoders.registry import resolve_model
from percept.environment.clauses import mean_of_clauses, split_clauses
from percept.environment.prompts import build_prompts

MODEL = "open_clip:ViT-B-32"
PROMPTS = 20_000
WHOLE_SAMPLE = 400  # whole prompts cost one full 77-token pass each: timed on a sample, scaled to PROMPTS
TARGET_SECONDS = 60.0


def main() -> None:
    prompts = build_prompts(make_features(PROMPTS), 1).prompts
    start = time.perf_counter()
    encoder = resolve_model(MODEL, "random").load("cpu")
    loaded = time.perf_counter()
    index = split_clauses(prompts)
    vectors = mean_of_clauses(encoder.encode_texts(index.clauses), index)
    clauses_done = time.perf_counter()
    assert vectors.shape[0] == PROMPTS
    clause_seconds = clauses_done - start
    verdict = "ok" if clause_seconds < TARGET_SECONDS else "SLOW"
    print(f"prompt encoding, {PROMPTS:,} style-1 prompts x 76 variables, {MODEL} (random weights, CPU):")
    print(f"  clauses  {clause_seconds:6.1f} s including the model load ({loaded - start:.1f} s); "
          f"{len(index.clauses)} distinct clauses encoded once (target < {TARGET_SECONDS:.0f} s) {verdict}")
    whole_start = time.perf_counter()
    encoder.encode_texts(prompts[:WHOLE_SAMPLE])
    whole_seconds = (time.perf_counter() - whole_start) * PROMPTS / WHOLE_SAMPLE
    print(f"  whole    {whole_seconds + loaded - start:6.1f} s including the model load, for {PROMPTS:,} prompts "
          f"each cut to 77 tokens (timed on {WHOLE_SAMPLE} and scaled; {whole_seconds / clause_seconds:.0f}x the "
          "clause time)")


if __name__ == "__main__":
    main()
