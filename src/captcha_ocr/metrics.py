"""Edit distance, character error rate and word error rate (pure Python, no framework).

CER is the summed edit distance over the summed label length (so long labels weigh more, as
in the reference recipe's CER); WER is the share of captchas with any error.
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions).

    >>> edit_distance("2b827", "2b27"), edit_distance("", "abc")
    (1, 3)
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_error_rate(label: str, prediction: str) -> float:
    """Edit distance over the label's length (1.0 for a wrong non-empty guess at "")."""
    if not label:
        return 0.0 if not prediction else 1.0
    return edit_distance(label, prediction) / len(label)


def error_rates(labels: Sequence[str], predictions: Sequence[str]) -> tuple[float, float]:
    """``(cer, wer)`` over a set: summed edits / summed label length, share of wrong labels.

    >>> error_rates(["abc", "de"], ["abc", "dd"])
    (0.2, 0.5)
    """
    if len(labels) != len(predictions):
        raise ValueError("labels and predictions differ in length")
    if not labels:
        return 0.0, 0.0
    edits = sum(edit_distance(t, p) for t, p in zip(labels, predictions))
    total = sum(len(t) for t in labels)
    wrong = sum(t != p for t, p in zip(labels, predictions))
    return edits / max(1, total), wrong / len(labels)
