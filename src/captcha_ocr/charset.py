"""The character set, the CTC blank, label encoding and CTC decoding (greedy and beam search).

One convention everywhere: class 0 is the CTC blank, ``charset[i]`` is class ``i + 1``.
NumPy only, so that reading captchas never needs TensorFlow.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from captcha_ocr.errors import CaptchaOCRError

BLANK = 0


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters and their CTC classes.

    >>> cs = Charset.from_labels(["b2a", "ab"])
    >>> cs.chars, cs.encode("ab2"), cs.decode([1, 2, 3])
    ('2ab', [2, 3, 1], '2ab')
    """

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise CaptchaOCRError("the charset is empty: no labeled images were found")
        if len(set(self.chars)) != len(self.chars):
            raise CaptchaOCRError(f"the charset {self.chars!r} repeats a character")

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> Charset:
        """The sorted set of characters in ``labels`` (sorted, so indices never change)."""
        return cls("".join(sorted(set("".join(labels)))))

    @property
    def num_classes(self) -> int:
        """Characters plus the blank."""
        return len(self.chars) + 1

    def unknown(self, label: str) -> str:
        """Characters of ``label`` the charset cannot express, in order of appearance."""
        index = self._index
        return "".join(dict.fromkeys(c for c in label if c not in index))

    def encode(self, label: str) -> list[int]:
        """Classes of the characters of ``label``; unknown characters are an error."""
        index = self._index
        missing = self.unknown(label)
        if missing:
            raise CaptchaOCRError(
                f"label {label!r} has characters the model cannot output: {missing!r} "
                f"(charset {self.chars!r})"
            )
        return [index[c] for c in label]

    def decode(self, classes: Iterable[int]) -> str:
        """Text of a class sequence that is already collapsed (blanks are dropped)."""
        return "".join(self.chars[c - 1] for c in classes if c != BLANK)

    @property
    def _index(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}


def ctc_steps_needed(label: str) -> int:
    """Minimum CTC time steps for ``label``: one per character, plus a blank between repeats.

    >>> ctc_steps_needed("abc"), ctc_steps_needed("aab")
    (3, 4)
    """
    repeats = sum(1 for a, b in itertools.pairwise(label) if a == b)
    return len(label) + repeats


def allowed_mask(charset: Charset, allowed_chars: str | None) -> np.ndarray | None:
    """Boolean mask over classes that keeps the blank and the allowed characters."""
    if allowed_chars is None:
        return None
    missing = charset.unknown(allowed_chars)
    if missing:
        raise CaptchaOCRError(
            f"allowed_chars has characters the model cannot output: {missing!r} "
            f"(charset {charset.chars!r})"
        )
    mask = np.zeros(charset.num_classes, dtype=bool)
    mask[BLANK] = True
    for c in allowed_chars:
        mask[charset.encode(c)[0]] = True
    return mask


def restrict(log_probs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Renormalise log-probabilities ``(..., C)`` over the allowed classes only."""
    if mask is None:
        return log_probs
    masked = np.where(mask, log_probs, -np.inf)
    return masked - _logsumexp(masked, axis=-1, keepdims=True)


def greedy_decode(log_probs: np.ndarray) -> tuple[list[int], float]:
    """Best path decoding of one sequence ``(T, C)`` of log-probabilities.

    Returns the collapsed classes and the probability of the best path (the product of the
    per-step maxima): a fast, slightly pessimistic estimate of the text's probability.
    """
    best = log_probs.argmax(axis=-1)
    path_log_prob = float(log_probs[np.arange(len(best)), best].sum())
    classes = [int(c) for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1])]
    return classes, float(np.exp(path_log_prob))


def greedy_decode_batch(log_probs: np.ndarray) -> list[tuple[list[int], float]]:
    """:func:`greedy_decode` over a batch ``(B, T, C)``, vectorised."""
    best = log_probs.argmax(axis=-1)  # (B, T)
    path_log_probs = np.take_along_axis(log_probs, best[..., None], axis=-1)[..., 0].sum(axis=1)
    keep = best != BLANK
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return [
        ([int(c) for c in row[k]], float(np.exp(p)))
        for row, k, p in zip(best, keep, path_log_probs)
    ]


def beam_search_decode(log_probs: np.ndarray, beam_width: int = 10) -> tuple[list[int], float]:
    """CTC prefix beam search over one sequence ``(T, C)`` of log-probabilities.

    Returns the most probable collapsed class sequence and its probability summed over all
    the paths that collapse to it (within the beam): the model's probability of the text.
    """
    if beam_width < 1:
        raise CaptchaOCRError("beam_width must be >= 1")
    neg_inf = -np.inf
    # Each prefix keeps two log-probabilities: paths ending in a blank, and in its last class.
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}
    num_classes = log_probs.shape[1]
    for step in log_probs:
        # Only the likeliest classes at this step can extend a beam into the top beam_width.
        candidates = np.argsort(step)[::-1][: min(num_classes, beam_width + 1)]
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_last) in beams.items():
            p_total = np.logaddexp(p_blank, p_last)
            for c in candidates:
                p = float(step[c])
                if p == neg_inf:
                    continue
                if c == BLANK:
                    _add(following, prefix, p_total + p, neg_inf)
                elif prefix and prefix[-1] == c:
                    _add(following, prefix, neg_inf, p_last + p)  # repeat, no blank: same prefix
                    _add(following, (*prefix, int(c)), neg_inf, p_blank + p)  # blank between: new
                else:
                    _add(following, (*prefix, int(c)), neg_inf, p_total + p)
        ranked = sorted(following.items(), key=lambda kv: -np.logaddexp(*kv[1]))
        beams = {prefix: (b, last) for prefix, (b, last) in ranked[:beam_width]}
    best_prefix, (p_blank, p_last) = max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))
    return list(best_prefix), float(np.exp(np.logaddexp(p_blank, p_last)))


def _add(
    beams: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], blank: float, last: float
) -> None:
    """Add path probabilities (log) ending in a blank / in the last class to ``prefix``."""
    entry = beams.setdefault(prefix, [-np.inf, -np.inf])
    entry[0] = np.logaddexp(entry[0], blank)
    entry[1] = np.logaddexp(entry[1], last)


def _logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)
