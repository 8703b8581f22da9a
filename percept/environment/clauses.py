"""Environmental prompts as clauses: each ``<key text> is <value>`` on its own.

A style-1 prompt for 76 variables runs to well over a thousand CLIP tokens, while a
CLIP text tower reads 77: encoded whole, only its first few clauses reach the model.
Encoded clause by clause, every variable counts: the image's text vector is the
normalised mean of its clause vectors, and each distinct clause is encoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from percept.model.knn import l2_normalise

SEPARATOR = "; "
SEPARATOR_TOKENS = 1  # ";" is one token for CLIP's byte-pair tokenizer; the space is not a token
SPECIAL_TOKENS = 2    # start and end of text


@dataclass(frozen=True)
class ClauseIndex:
    """The distinct clauses of a list of prompts, and which clauses make up each prompt."""

    clauses: list[str]   # distinct clause texts, in order of first appearance
    ids: np.ndarray      # flat: the clause id of every clause of every prompt, prompt after prompt
    starts: np.ndarray   # prompt i's clauses are ids[starts[i]:starts[i + 1]]

    @property
    def prompts(self) -> int:
        return len(self.starts) - 1


def split_clauses(prompts: list[str]) -> ClauseIndex:
    """Split each prompt at ``"; "`` and number the distinct clauses."""
    distinct: dict[str, int] = {}
    ids: list[int] = []
    starts = [0]
    for prompt in prompts:
        if prompt:
            ids.extend(distinct.setdefault(clause, len(distinct)) for clause in prompt.split(SEPARATOR))
        starts.append(len(ids))
    return ClauseIndex(list(distinct), np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64))


def mean_of_clauses(clause_vectors: np.ndarray, index: ClauseIndex) -> np.ndarray:
    """Each prompt's text vector: the normalised mean of its clauses' unit vectors (float64; a prompt
    without clauses gets a zero row)."""
    from scipy.sparse import csr_matrix

    units = l2_normalise(np.asarray(clause_vectors, dtype=np.float64))
    incidence = csr_matrix((np.ones(len(index.ids)), index.ids, index.starts),
                           shape=(index.prompts, len(index.clauses)))
    return l2_normalise(np.asarray(incidence @ units))


@dataclass(frozen=True)
class Truncation:
    """How much of the prompts a text window cuts away."""

    context_length: int
    prompts: int
    prompts_cut: int
    clauses: int
    clauses_lost: int

    def warning(self, model: str) -> str | None:
        """A one-line warning when the window cuts any prompt, else None."""
        if not self.prompts_cut:
            return None
        share = 100.0 * self.clauses_lost / max(self.clauses, 1)
        return (f"{self.prompts_cut} of {self.prompts} environmental prompts are longer than the "
                f"{self.context_length}-token window of {model}: {share:.0f}% of their variables "
                f"({self.clauses_lost} of {self.clauses} clauses) never reach the model; "
                "use --prompt-encoding clauses to encode every variable")


def truncation(index: ClauseIndex, clause_tokens: np.ndarray, context_length: int) -> Truncation:
    """What a window of ``context_length`` tokens keeps of each whole prompt.

    ``clause_tokens[c]`` counts clause c's own tokens (start and end tokens excluded). A
    clause is lost unless it ends inside the window; CLIP's byte-pair tokenizer splits text
    into words first, so the tokens of a joined prompt are the sum over its clauses and
    separators.
    """
    prompt_of = np.repeat(np.arange(index.prompts), np.diff(index.starts))
    ends = np.cumsum(np.asarray(clause_tokens, dtype=np.int64)[index.ids] + SEPARATOR_TOKENS)
    before = np.concatenate([[0], ends])[index.starts[:-1]][prompt_of]
    content_end = ends - before - SEPARATOR_TOKENS  # the last token of each clause, counted in its prompt
    lost = content_end > context_length - SPECIAL_TOKENS
    cut = np.bincount(prompt_of[lost], minlength=index.prompts)
    return Truncation(context_length, index.prompts, int(np.count_nonzero(cut)), len(index.ids), int(lost.sum()))
