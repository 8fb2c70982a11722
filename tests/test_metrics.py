"""Edit distance, character error rate and word error rate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha_ocr.metrics import char_error_rate, edit_distance, error_rates, substitutions

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)
# A small alphabet makes shared characters (and so non-trivial alignments) likely.
short_text = st.text(alphabet="abc12", max_size=8)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("abc", "abc", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("2b827", "2b27", 1),  # one deletion
        ("abc", "abd", 1),  # one substitution
        ("abc", "abxc", 1),  # one insertion
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("abc", "cba", 2),
        ("aaaa", "bbbb", 4),
        ("intention", "execution", 5),
    ],
)
def test_edit_distance_known_values(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


@PROPERTY
@given(a=short_text, b=short_text)
def test_edit_distance_symmetric_and_bounded(a, b):
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


@PROPERTY
@given(a=short_text)
def test_edit_distance_to_itself_is_zero(a):
    assert edit_distance(a, a) == 0
    assert edit_distance(a, "") == len(a)


@PROPERTY
@given(a=short_text, b=short_text, c=short_text)
def test_edit_distance_triangle_inequality(a, b, c):
    assert edit_distance(a, c) <= edit_distance(a, b) + edit_distance(b, c)


def test_char_error_rate():
    assert char_error_rate("abc", "abc") == 0.0
    assert char_error_rate("abc", "abd") == pytest.approx(1 / 3)
    assert char_error_rate("abcd", "") == 1.0
    assert char_error_rate("ab", "abcd") == 1.0  # two insertions over a length of two
    assert char_error_rate("", "") == 0.0
    assert char_error_rate("", "x") == 1.0


def test_error_rates_weigh_by_label_length():
    # 1 edit over 5 characters; 1 of 2 captchas wrong.
    assert error_rates(["abc", "de"], ["abc", "dd"]) == (pytest.approx(0.2), pytest.approx(0.5))
    cer, wer = error_rates(["abcdefgh", "a"], ["abcdefgh", "b"])
    assert cer == pytest.approx(1 / 9)  # not the mean of per-label CERs (0.5)
    assert wer == pytest.approx(0.5)


def test_error_rates_perfect_and_all_wrong():
    assert error_rates(["ab", "cd"], ["ab", "cd"]) == (0.0, 0.0)
    assert error_rates(["ab", "cd"], ["", ""]) == (1.0, 1.0)


def test_error_rates_empty_and_mismatched():
    assert error_rates([], []) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        error_rates(["a"], [])


@settings(max_examples=200, deadline=None)
@given(st.text("abc01O", max_size=8), st.text("abc01O", max_size=8))
def test_substitutions_are_part_of_a_minimal_alignment(label: str, read: str) -> None:
    pairs = substitutions(label, read)
    assert all(a != b for a, b in pairs)
    # substitutions + the length difference never exceed the edit distance
    assert len(pairs) + abs(len(label) - len(read)) <= edit_distance(label, read)
    if len(label) == len(read) and edit_distance(label, read) == sum(
        a != b for a, b in zip(label, read)
    ):
        assert len(pairs) == edit_distance(label, read)


def test_doctests_of_metrics_evaluate_data_and_model() -> None:
    import doctest

    from captcha_ocr import data, evaluate, metrics, model

    for module in (metrics, evaluate, data, model):
        assert doctest.testmod(module).failed == 0
