"""Edit distance, character error rate and word error rate (pure Python, no framework).

CER is the summed edit distance over the summed label length (so long labels weigh more, as
in the reference recipe's CER); WER is the share of captchas with any error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


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


def substitutions(label: str, prediction: str) -> list[tuple[str, str]]:
    """The ``(label char, read char)`` substitutions of a minimal edit alignment (ties go to
    substitutions, so a misread glyph shows as one, not as a deletion plus an insertion).

    >>> substitutions("ce", "ee"), substitutions("abcd", "abd"), substitutions("nm", "mn")
    ([('c', 'e')], [], [('n', 'm'), ('m', 'n')])
    """
    rows, cols = len(label) + 1, len(prediction) + 1
    cost = [[i + j if i == 0 or j == 0 else 0 for j in range(cols)] for i in range(rows)]
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j - 1] + (label[i - 1] != prediction[j - 1]),
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
            )
    pairs, i, j = [], len(label), len(prediction)
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (label[i - 1] != prediction[j - 1]):
            if label[i - 1] != prediction[j - 1]:
                pairs.append((label[i - 1], prediction[j - 1]))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


# The precision the recommended reject threshold keeps on the validation images.
REJECT_PRECISION = 0.99


def reads_to_show(precision: float) -> int:
    """The fewest reads on which one misread costs no more than ``1 - precision``: a precision
    measured on fewer is a guess (100 for 99 %; not 101 by rounding).

    >>> reads_to_show(0.99), reads_to_show(0.9)
    (100, 10)
    """
    return math.ceil(1 / (1 - precision) - 1e-9)


class RejectThreshold(NamedTuple):
    """A chosen ``min_confidence``, the share of the reads it keeps, and their precision."""

    min_confidence: float
    accepts: float
    precision: float


def threshold_for_precision(
    confidences: Sequence[float],
    correct: Sequence[bool],
    precision: float = REJECT_PRECISION,
    fewest: int | None = None,
) -> RejectThreshold:
    """The lowest ``min_confidence`` at which the reads kept (confidence >= it) are right at
    least ``precision`` of the time, among those that keep enough reads to show it
    (``fewest``; None: :func:`reads_to_show`, or half the reads when there are fewer than
    twice that).

    Why the floor: on rkn_securimage one sure misread among the first 21 validation reads
    put the threshold above it, accepting 9 % of the reads; on henan_digits, whose
    validation labels are wrong about 2 % of the time (read surely, right), 6 %. When no
    threshold with enough reads reaches ``precision`` but the highest precision any reaches
    is within the noise (one standard error) of it, the threshold keeps the most reads whose
    precision is within that noise of the highest, and the result says which precision that
    is. When even that is out of reach, the threshold that shows the highest precision, as
    long as that beats keeping every read by more than its noise: on rkn_securimage (hard
    reads, 93 % of the validation captchas right) the surest half was 97 % right, and 1.0
    (the rule before) made a model that reads 95 % accept none. Where confidence does not
    sort right reads from wrong (a model that reads little), 1.0: reject nearly all
    (precision NaN when no read is that sure).

    >>> threshold_for_precision([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.75)
    RejectThreshold(min_confidence=0.6, accepts=1.0, precision=0.75)
    >>> threshold_for_precision([0.9, 0.8], [True, True])
    RejectThreshold(min_confidence=0.8, accepts=1.0, precision=1.0)
    """
    if len(confidences) != len(correct) or not len(confidences):
        raise ValueError("need as many confidences as right/wrong flags, at least one")
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    if fewest is None:
        fewest = max(1, min(reads_to_show(precision), len(order) // 2))
    candidates, right = [], 0  # (kept, right among them), one per distinct confidence
    for kept, i in enumerate(order, 1):
        right += bool(correct[i])
        ties_follow = kept < len(order) and confidences[order[kept]] == confidences[i]
        if kept >= fewest and not ties_follow:  # a threshold keeps all equal reads, or none
            candidates.append((kept, right))
    every_read = right / len(order)  # the precision of keeping them all
    reaching = [c for c in candidates if c[1] >= precision * c[0]]
    if not reaching:
        best_kept, best_right = max(candidates, key=lambda c: (c[1] / c[0], c[0]))
        highest = best_right / best_kept
        noise = math.sqrt(highest * (1 - highest) / best_kept)  # one standard error
        if highest + noise >= precision:  # short of it by the noise alone
            reaching = [c for c in candidates if c[1] >= (highest - noise) * c[0]]
        elif highest - noise > every_read:  # out of reach, but the surest reads are better
            reaching = [(best_kept, best_right)]
        else:  # confidence does not tell right reads from wrong: reject nearly all
            kept = sum(c >= 1.0 for c in confidences)
            right = sum(bool(ok) for c, ok in zip(confidences, correct) if c >= 1.0)
            return RejectThreshold(1.0, kept / len(order), right / kept if kept else math.nan)
    kept, right = max(reaching)  # the most reads
    return RejectThreshold(float(confidences[order[kept - 1]]), kept / len(order), right / kept)
