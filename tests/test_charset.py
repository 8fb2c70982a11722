"""Charset and label encoding: one ordered set of characters, the blank at class 0."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha_ocr.charset import BLANK, Charset, ctc_steps_needed
from captcha_ocr.errors import CaptchaOCRError

# Deterministic property tests: the same examples on every run, no example database written.
PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None)


# --- Charset -----------------------------------------------------------------------------


def test_from_labels_is_sorted_and_independent_of_order():
    labels = ["b2a", "ab", "zz9", "007"]
    charset = Charset.from_labels(labels)
    assert charset.chars == "0279abz"
    assert Charset.from_labels(reversed(labels)) == charset
    assert Charset.from_labels(["".join(reversed(x)) for x in labels]).chars == charset.chars


def test_classes_start_after_the_blank():
    charset = Charset("abc")
    assert BLANK == 0
    assert charset.num_classes == 4
    assert charset.encode("abc") == [1, 2, 3]
    assert charset.encode("cab") == [3, 1, 2]
    assert charset.decode([3, 1, 2]) == "cab"


def test_encode_decode_round_trip_keeps_repeats():
    charset = Charset.from_labels(["2b827", "aab"])
    for label in ["2b827", "aab", "aaaa", "", "7"]:
        assert charset.decode(charset.encode(label)) == label


def test_decode_drops_blanks():
    assert Charset("ab").decode([0, 1, 0, 0, 2, 0]) == "ab"


def test_unknown_character_raises_naming_it():
    charset = Charset("abc")
    with pytest.raises(CaptchaOCRError, match="'z'"):
        charset.encode("abzc")
    assert charset.unknown("xaxyb") == "xy"
    assert charset.unknown("cab") == ""


@pytest.mark.parametrize("chars", ["aa", "abca"])
def test_repeated_characters_rejected(chars):
    with pytest.raises(CaptchaOCRError, match="repeats"):
        Charset(chars)


def test_empty_charset_rejected():
    with pytest.raises(CaptchaOCRError, match="empty"):
        Charset("")
    with pytest.raises(CaptchaOCRError, match="empty"):
        Charset.from_labels([])
    with pytest.raises(CaptchaOCRError, match="empty"):
        Charset.from_labels(["", ""])


@pytest.mark.parametrize(
    ("label", "steps"), [("", 0), ("a", 1), ("abc", 3), ("aab", 4), ("aaa", 5), ("abba", 5)]
)
def test_ctc_steps_needed(label, steps):
    assert ctc_steps_needed(label) == steps


@PROPERTY
@given(
    chars=st.sets(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    data=st.data(),
)
def test_encode_decode_round_trip_property(chars, data):
    charset = Charset.from_labels(["".join(chars)])
    assert sorted(charset.chars) == list(charset.chars)
    assert set(charset.chars) == chars
    label = data.draw(st.text(alphabet=sorted(chars), max_size=20))
    classes = charset.encode(label)
    assert all(1 <= c < charset.num_classes for c in classes)
    assert charset.decode(classes) == label
