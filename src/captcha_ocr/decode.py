"""CTC decoding: greedy (best path) and prefix beam search, restricting the output to some
characters, and where each character was read. Input is log-probabilities ``(T, C)`` or
``(B, T, C)`` with the blank at class :data:`~captcha_ocr.charset.BLANK`; output is collapsed
classes and a probability, or the time steps that emitted each class.

NumPy only, so that reading captchas never needs TensorFlow.
"""

from __future__ import annotations

import numpy as np

from captcha_ocr.charset import BLANK, Charset
from captcha_ocr.errors import CaptchaOCRError


def allowed_mask(charset: Charset, allowed_chars: str | None) -> np.ndarray | None:
    """Boolean mask over classes that keeps the blank and the allowed characters."""
    if allowed_chars is None:
        return None
    charset.check_known(allowed_chars, "allowed_chars")
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


def length_decode(log_probs: np.ndarray, lengths: tuple[int, int]) -> tuple[list[int], float]:
    """The most probable single CTC path of one sequence ``(T, C)`` whose text has between
    ``lengths[0]`` and ``lengths[1]`` classes (Viterbi), and that path's probability: what
    :func:`greedy_decode` reads when the best path of all has another length. Falls back to
    the greedy read when no path of those lengths is possible.

    >>> lp = np.log(np.array([[.1, .9, 0], [.6, .4, 0], [.1, .9, 0]]) + 1e-12)  # "a", blank, "a"
    >>> greedy_decode(lp)[0], length_decode(lp, (1, 1))[0], length_decode(lp, (2, 2))[0]
    ([1, 1], [1], [1, 1])
    """
    low, high = lengths
    steps, num_classes = log_probs.shape
    high = min(high, steps)
    # score[k, s]: the best path so far that has emitted k classes and is on symbol s now
    # (s = BLANK: between classes; else: on the k-th class, possibly repeated).
    score = np.full((high + 1, num_classes), -np.inf)
    score[0, BLANK] = log_probs[0, BLANK]
    if high >= 1:
        score[1, 1:] = log_probs[0, 1:]
    came_from = np.zeros((steps, high + 1, num_classes), np.int64)  # the symbol a step before
    counts, classes = np.arange(high + 1), np.arange(num_classes)
    for t in range(1, steps):
        new = np.empty_like(score)
        # To the blank: from any symbol, the count unchanged.
        best_symbol = score.argmax(axis=1)
        new[:, BLANK] = score[counts, best_symbol] + log_probs[t, BLANK]
        came_from[t, :, BLANK] = best_symbol
        # To class c at count k: stay on c (k), or come from count k - 1 on the blank or on a
        # class other than c (two best classes: the best other than c is one of them).
        new[:, 1:] = score[:, 1:]
        came_from[t, :, 1:] = classes[1:]
        if high >= 1:
            before = score[:-1]  # counts 0 .. high-1
            # (the first of equal scores, as the JS reader takes it)
            ranked = np.argsort(-before[:, 1:], axis=1, kind="stable")[:, :2] + 1  # (high, <=2)
            first = ranked[:, 0]
            second = ranked[:, 1] if num_classes > 2 else ranked[:, 0]
            other = np.where(classes[None, 1:] == first[:, None], second[:, None], first[:, None])
            other_score = np.take_along_axis(before, other, axis=1)
            other_score[other == classes[None, 1:]] = -np.inf  # one class only: no other
            from_blank = before[:, BLANK][:, None] >= other_score
            moved = np.where(from_blank, before[:, BLANK][:, None], other_score)
            moved_from = np.where(from_blank, BLANK, other)
            better = moved > new[1:, 1:]
            new[1:, 1:] = np.where(better, moved, new[1:, 1:])
            came_from[t, 1:, 1:] = np.where(better, moved_from, came_from[t, 1:, 1:])
        emit = log_probs[t].copy()
        emit[BLANK] = 0.0  # added above
        score = new + emit
    ends = score[low : high + 1] if low <= high else score[:0]
    if not ends.size or not np.isfinite(ends.max()):
        return greedy_decode(log_probs)
    count, symbol = np.unravel_index(int(ends.argmax()), ends.shape)
    count, symbol = int(count) + low, int(symbol)
    path_log_prob = float(score[count, symbol])
    decoded: list[int] = []
    for t in range(steps - 1, -1, -1):
        previous = int(came_from[t, count, symbol]) if t else BLANK
        if symbol != BLANK and (t == 0 or previous != symbol):
            decoded.append(symbol)
            count -= 1
        symbol = previous
    return decoded[::-1], float(np.exp(path_log_prob))


def decode_batch(
    log_probs: np.ndarray, lengths: tuple[int, int] | None = None
) -> list[tuple[list[int], float]]:
    """Greedy reads of a batch ``(B, T, C)``; with ``lengths`` (the shortest and longest text
    the model was trained on), a read of another length is replaced by the best path of those
    lengths (:func:`length_decode`): a text of a length never seen is surely wrong."""
    decoded = greedy_decode_batch(log_probs)
    if lengths is None:
        return decoded
    low, high = lengths
    return [
        read if low <= len(read[0]) <= high else length_decode(row, lengths)
        for read, row in zip(decoded, log_probs)
    ]


def greedy_steps(log_probs: np.ndarray) -> list[list[int]]:
    """The time steps that emitted each class of :func:`greedy_decode`'s output, in order.

    On the best path, a kept class is emitted by its run of equal steps (the repeats that
    collapse into it); blanks emit nothing. One list per class, steps ascending.

    >>> lp = np.log(np.array([[.1, .9], [.1, .9], [.9, .1], [.2, .8]]))  # blank, then class 1
    >>> greedy_steps(lp)
    [[0, 1], [3]]
    """
    best = log_probs.argmax(axis=-1)
    steps: list[list[int]] = []
    for t, c in enumerate(best):
        if c == BLANK:
            continue
        if t > 0 and c == best[t - 1]:
            steps[-1].append(t)
        else:
            steps.append([t])
    return steps


def align(log_probs: np.ndarray, classes: list[int]) -> list[list[int]]:
    """The time steps that emitted each of ``classes`` on the most probable CTC path that
    collapses to them (Viterbi forced alignment over one sequence ``(T, C)``).

    For the greedy text this is the best path itself, so it agrees with :func:`greedy_steps`;
    it also places a beam search's text. Raises :class:`CaptchaOCRError` when no path of
    non-zero probability reads ``classes``.
    """
    if not classes:
        return []
    steps = len(log_probs)
    labels = np.full(2 * len(classes) + 1, BLANK)  # blank, c1, blank, c2, ..., blank
    labels[1::2] = classes
    emit = log_probs[:, labels]  # (T, S)
    # A path may skip the blank between two different classes, never between equal ones.
    skip = np.zeros(len(labels), dtype=bool)
    skip[2:] = (labels[2:] != BLANK) & (labels[2:] != labels[:-2])
    score = np.full(len(labels), -np.inf)
    score[:2] = emit[0, :2]
    came_from = np.zeros((steps, len(labels)), dtype=np.int8)  # 0 stay, 1 or 2 states back
    for t in range(1, steps):
        candidates = np.full((3, len(labels)), -np.inf)
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        candidates[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        came_from[t] = candidates.argmax(axis=0)
        score = candidates[came_from[t], np.arange(len(labels))] + emit[t]
    state = len(labels) - 1 if score[-1] >= score[-2] else len(labels) - 2
    if not np.isfinite(score[state]):
        raise CaptchaOCRError(f"no CTC path of {steps} steps reads these {len(classes)} classes")
    emitted: list[list[int]] = [[] for _ in classes]
    for t in range(steps - 1, -1, -1):
        if state % 2:  # odd states are classes, even ones blanks
            emitted[state // 2].insert(0, t)
        state -= int(came_from[t, state])
    return emitted


def beam_search_decode(
    log_probs: np.ndarray, beam_width: int = 10, lengths: tuple[int, int] | None = None
) -> tuple[list[int], float]:
    """CTC prefix beam search over one sequence ``(T, C)`` of log-probabilities.

    Returns the most probable collapsed class sequence and its probability summed over all
    the paths that collapse to it (within the beam): the model's probability of the text.
    With ``lengths`` (shortest, longest), the most probable beam of such a length; when no
    beam has one, :func:`length_decode`'s read.
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
    if lengths is not None:
        beams = {k: v for k, v in beams.items() if lengths[0] <= len(k) <= lengths[1]}
        if not beams:
            return length_decode(log_probs, lengths)
    best_prefix, (p_blank, p_last) = max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))
    return list(best_prefix), float(np.exp(np.logaddexp(p_blank, p_last)))


def ctc_loss(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """CTC's negative log-likelihood ``(B,)`` of each label of ``labels`` ``(B, L)`` (padded
    with the blank) under ``log_probs`` ``(B, T, C)``: the forward algorithm over the labels
    with a blank before, between and after their characters. The same loss as training's
    (``fit.CTCLoss``), in NumPy, for the validation loss.

    >>> lp = np.log(np.full((1, 2, 2), 0.5))  # two steps, blank or "a" at even odds
    >>> round(float(np.exp(-ctc_loss(lp, np.array([[1]]))[0])), 4)  # "a": a-, -a, aa
    0.75
    """
    log_probs = np.asarray(log_probs, np.float64)
    labels = np.asarray(labels, np.int64)
    batch, steps, _ = log_probs.shape
    lengths = (labels != BLANK).sum(axis=1)
    states = 2 * labels.shape[1] + 1
    extended = np.full((batch, states), BLANK, np.int64)
    extended[:, 1::2] = labels
    # A character's state may also be reached from two states back (skipping the blank
    # between them) unless the character two back is the same one.
    skip = np.zeros((batch, states), bool)
    skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]
    emit = np.take_along_axis(log_probs, np.repeat(extended[:, None, :], steps, axis=1), axis=2)
    alpha = np.full((batch, states), -np.inf)
    alpha[:, :2] = emit[:, 0, :2]
    nothing = np.full((batch, 2), -np.inf)
    for step in range(1, steps):
        one_back = np.concatenate([nothing[:, :1], alpha[:, :-1]], axis=1)
        two_back = np.where(skip, np.concatenate([nothing, alpha[:, :-2]], axis=1), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, one_back), two_back) + emit[:, step]
    rows = np.arange(batch)
    ends_in_blank = alpha[rows, 2 * lengths]
    ends_in_char = np.where(lengths > 0, alpha[rows, np.maximum(2 * lengths - 1, 0)], -np.inf)
    return -np.logaddexp(ends_in_blank, ends_in_char)


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
