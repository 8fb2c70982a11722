"""CTC decoding (greedy and prefix beam search) and restricting the output: NumPy only."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha_ocr.charset import BLANK, Charset, ctc_steps_needed
from captcha_ocr.decode import (
    allowed_mask,
    beam_search_decode,
    decode_batch,
    greedy_decode,
    greedy_decode_batch,
    length_decode,
    restrict,
)
from captcha_ocr.errors import CaptchaOCRError

# Deterministic property tests: the same examples on every run, no example database written.
PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def random_log_probs(seed: int, steps: int, classes: int, batch: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (steps, classes) if batch is None else (batch, steps, classes)
    return log_softmax(rng.normal(0.0, 2.0, size=shape))


def peaked_log_probs(path: list[int], classes: int, peak: float = 0.9) -> np.ndarray:
    """(T, C) log-probabilities where step t puts ``peak`` on ``path[t]``, the rest evenly."""
    probs = np.full((len(path), classes), (1.0 - peak) / (classes - 1))
    probs[np.arange(len(path)), path] = peak
    return np.log(probs)


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    """The CTC collapse rule, written independently of the code under test."""
    out = []
    previous = None
    for c in path:
        if c != BLANK and c != previous:
            out.append(c)
        previous = c
    return tuple(out)


def brute_force_text_probs(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Probability of every text: the sum over all C**T paths that collapse to it."""
    steps, classes = log_probs.shape
    probs = np.exp(log_probs)
    texts: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=steps):
        p = float(np.prod(probs[np.arange(steps), path]))
        key = collapse(path)
        texts[key] = texts.get(key, 0.0) + p
    return texts


def path_for(classes: list[int], blanks_between: list[int], repeats: list[int]) -> list[int]:
    """A CTC path for ``classes``: each class repeated, with blanks between (required when a
    class follows itself)."""
    path: list[int] = []
    for i, c in enumerate(classes):
        if i > 0:
            need = 1 if classes[i - 1] == c else 0
            path.extend([BLANK] * max(need, blanks_between[i]))
        path.extend([c] * repeats[i])
    return path


# --- greedy decoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([1, 1, 1], [1]),  # repeats collapse
        ([0, 0, 0], []),  # blanks are dropped
        ([1, 0, 1], [1, 1]),  # a blank between repeats keeps both
        ([0, 1, 1, 0, 2, 2, 0], [1, 2]),
        ([2, 1, 2, 1], [2, 1, 2, 1]),
        ([1, 0, 0, 1, 1, 0, 1], [1, 1, 1]),
    ],
)
def test_greedy_decode_collapses(path, expected):
    log_probs = peaked_log_probs(path, classes=3)
    classes, confidence = greedy_decode(log_probs)
    assert classes == expected
    assert confidence == pytest.approx(0.9 ** len(path))


def test_greedy_confidence_is_product_of_step_maxima():
    log_probs = random_log_probs(seed=3, steps=12, classes=6)
    _, confidence = greedy_decode(log_probs)
    assert confidence == pytest.approx(float(np.prod(np.exp(log_probs).max(axis=1))))


def test_greedy_batch_matches_single():
    batch = random_log_probs(seed=5, steps=15, classes=4, batch=7)
    results = greedy_decode_batch(batch)
    assert len(results) == 7
    for row, (classes, confidence) in zip(batch, results):
        single_classes, single_confidence = greedy_decode(row)
        assert classes == single_classes
        assert confidence == pytest.approx(single_confidence)


def test_greedy_batch_collapses_per_row():
    # Row 2 starts with the class row 1 ended with: no collapse across rows.
    paths = [[1, 1, 0, 1], [2, 0, 2, 2]]
    batch = np.stack([peaked_log_probs(p, classes=3) for p in paths])
    assert [c for c, _ in greedy_decode_batch(batch)] == [[1, 1], [2, 2]]


@PROPERTY
@given(data=st.data())
def test_greedy_decodes_a_one_hot_path_to_its_label(data):
    charset = Charset("ab3")
    label = data.draw(st.text(alphabet=charset.chars, max_size=8), label="label")
    n = len(label)
    repeats = data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n), label="repeats")
    gaps = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n), label="gaps")
    lead = data.draw(st.integers(0, 2), label="lead")
    trail = data.draw(st.integers(0, 2), label="trail")
    path = [BLANK] * lead + path_for(charset.encode(label), gaps, repeats) + [BLANK] * trail
    if not path:
        path = [BLANK]
    log_probs = np.log(np.eye(charset.num_classes)[path] * 0.97 + 0.01)
    classes, confidence = greedy_decode(log_probs)
    assert charset.decode(classes) == label
    assert confidence == pytest.approx(0.98 ** len(path))
    assert ctc_steps_needed(label) <= len(path)


# --- beam search ---------------------------------------------------------------------------


def test_beam_search_finds_text_whose_paths_sum_higher_than_the_best_path():
    # Two steps over {blank, a}: blank-blank is the single best path (0.36), but "a" is the
    # more probable text: aa + a- + -a = 0.16 + 0.24 + 0.24 = 0.64.
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    greedy_classes, greedy_p = greedy_decode(log_probs)
    beam_classes, beam_p = beam_search_decode(log_probs, beam_width=4)
    assert greedy_classes == []
    assert greedy_p == pytest.approx(0.36)
    assert beam_classes == [1]
    assert beam_p == pytest.approx(0.64)


def test_beam_search_beats_greedy_with_two_characters():
    # Classes {blank, a, b}. The best single path is b-- (0.064), so greedy reads "b"; but "a"
    # spreads over more paths (a--, -a-, --a, aa-, -aa, aaa, ...) and sums to 0.2485, while
    # all paths of "b" sum to only 0.1946.
    probs = np.array([[0.25, 0.35, 0.40], [0.40, 0.35, 0.25], [0.40, 0.35, 0.25]])
    log_probs = np.log(probs)
    texts = brute_force_text_probs(log_probs)
    greedy_classes, greedy_p = greedy_decode(log_probs)
    beam_classes, beam_p = beam_search_decode(log_probs, beam_width=10)
    assert greedy_classes == [2]
    assert greedy_p == pytest.approx(0.4**3)
    assert beam_classes == [1]
    assert beam_p == pytest.approx(texts[(1,)])
    assert texts[(1,)] > texts[(2,)]


@pytest.mark.parametrize(("seed", "steps"), [(0, 3), (1, 3), (2, 4), (3, 4), (4, 4), (5, 4)])
def test_beam_search_probability_equals_brute_force_sum(seed, steps):
    log_probs = random_log_probs(seed, steps=steps, classes=3)
    texts = brute_force_text_probs(log_probs)
    assert sum(texts.values()) == pytest.approx(1.0)
    best_text = max(texts, key=texts.get)
    # 31 prefixes exist for T=4 over two characters: a beam this wide never prunes.
    classes, probability = beam_search_decode(log_probs, beam_width=64)
    assert tuple(classes) == best_text
    assert probability == pytest.approx(texts[best_text], rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_beam_search_agrees_with_greedy_on_peaked_inputs(seed):
    rng = np.random.default_rng(seed)
    charset = Charset("abcde")
    label = "".join(rng.choice(list(charset.chars), size=6))
    n = len(label)
    path = path_for(charset.encode(label), list(rng.integers(0, 2, n)), list(rng.integers(1, 3, n)))
    log_probs = peaked_log_probs(path, charset.num_classes, peak=0.98)
    greedy_classes, greedy_p = greedy_decode(log_probs)
    beam_classes, beam_p = beam_search_decode(log_probs, beam_width=8)
    assert charset.decode(greedy_classes) == label
    assert beam_classes == greedy_classes
    # Summing paths can only add probability to the text of the best path.
    assert beam_p >= greedy_p - 1e-12
    assert beam_p <= 1.0 + 1e-9


def test_beam_width_must_be_positive():
    with pytest.raises(CaptchaOCRError, match="beam_width"):
        beam_search_decode(random_log_probs(0, 3, 3), beam_width=0)


# --- restricting the output ----------------------------------------------------------------


def test_allowed_mask_keeps_blank_and_allowed():
    charset = Charset("abcde")
    mask = allowed_mask(charset, "db")
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, True, False, True, False]
    assert allowed_mask(charset, None) is None


def test_allowed_mask_unknown_chars_raise():
    with pytest.raises(CaptchaOCRError, match="'xz'"):
        allowed_mask(Charset("abc"), "axbz")


def test_restrict_none_is_identity():
    log_probs = random_log_probs(1, 4, 3)
    assert restrict(log_probs, None) is log_probs


def test_restrict_renormalises_over_allowed_classes():
    charset = Charset("abcd")
    log_probs = random_log_probs(2, steps=6, classes=charset.num_classes, batch=3)
    mask = allowed_mask(charset, "bd")
    restricted = restrict(log_probs, mask)
    probs = np.exp(restricted)
    assert restricted.shape == log_probs.shape
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    assert np.all(probs[..., ~mask] == 0.0)
    # Allowed classes keep their relative odds.
    ratio = np.exp(log_probs[..., mask] - restricted[..., mask])
    np.testing.assert_allclose(ratio, ratio[..., :1] * np.ones_like(ratio))


@pytest.mark.parametrize("seed", range(6))
def test_restricted_output_never_contains_disallowed_chars(seed):
    charset = Charset("abcdef")
    allowed = "ace"
    rng = np.random.default_rng(seed)
    # Make disallowed characters the favourites so the restriction has work to do.
    logits = rng.normal(0.0, 1.0, size=(10, charset.num_classes))
    logits[
        :, [c for c in range(1, charset.num_classes) if charset.chars[c - 1] not in allowed]
    ] += 3
    log_probs = log_softmax(logits)
    unrestricted = charset.decode(greedy_decode(log_probs)[0])
    assert set(unrestricted) - set(allowed), "the unrestricted read should use banned chars"

    restricted = restrict(log_probs, allowed_mask(charset, allowed))
    greedy_text = charset.decode(greedy_decode(restricted)[0])
    beam_text = charset.decode(beam_search_decode(restricted, beam_width=5)[0])
    batch_text = charset.decode(greedy_decode_batch(restricted[None])[0][0])
    for text in (greedy_text, beam_text, batch_text):
        assert set(text) <= set(allowed)
    assert greedy_text  # not all blanks: the allowed characters still get read


def _collapse(path: tuple[int, ...]) -> list[int]:
    return [c for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1])]


@pytest.mark.parametrize("seed", range(40))
def test_length_decode_is_the_best_path_of_those_lengths_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    steps, classes = int(rng.integers(1, 7)), int(rng.integers(2, 5))
    log_probs = random_log_probs(seed, steps, classes)
    if seed % 4 == 0:  # a class the output may not use (restrict), as with --allowed-chars
        log_probs[:, int(rng.integers(1, classes))] = -np.inf
    low = int(rng.integers(0, 4))  # 0: a model that does not know its shortest label
    high = int(rng.integers(max(low, 1), 5))
    paths = [
        (float(sum(log_probs[t, c] for t, c in enumerate(path))), _collapse(path))
        for path in itertools.product(range(classes), repeat=steps)
        if low <= len(_collapse(path)) <= high
    ]
    classes_read, probability = length_decode(log_probs, (low, high))
    finite = [p for p in paths if np.isfinite(p[0])]
    if not finite:  # no path of those lengths: the greedy read
        assert classes_read == greedy_decode(log_probs)[0]
        return
    best = max(score for score, _ in finite)
    assert low <= len(classes_read) <= high
    assert np.log(probability) == pytest.approx(best)
    # The text read is one that path spells.
    assert best == pytest.approx(max(score for score, text in finite if text == classes_read))


def test_a_read_of_a_trained_length_is_kept_and_another_is_held_to_them() -> None:
    """The best path reads "aab" (3 classes); a model trained on 2-character labels reads the
    best 2-class path instead, at that path's (lower) probability."""
    a, b = 1, 2
    log_probs = np.stack([peaked_log_probs([a, BLANK, a, b, b], 3, peak=0.9)])
    ((free, free_p),) = decode_batch(log_probs, (1, 3))
    ((held, held_p),) = decode_batch(log_probs, (2, 2))
    assert free == [a, a, b] == greedy_decode(log_probs[0])[0]
    assert len(held) == 2 and held_p < free_p
    assert decode_batch(log_probs) == greedy_decode_batch(log_probs)


def test_beam_search_keeps_to_the_trained_lengths() -> None:
    a, b = 1, 2
    log_probs = peaked_log_probs([a, BLANK, a, b, b], 3, peak=0.9)
    assert len(beam_search_decode(log_probs, 5)[0]) == 3
    assert len(beam_search_decode(log_probs, 5, (2, 2))[0]) == 2
    assert len(beam_search_decode(log_probs, 1, (4, 5))[0]) in (4, 5)  # no beam that long
