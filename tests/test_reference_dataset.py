"""The tutorial's data set, read from ../shared/datasets (skipped when it is not there)."""

from __future__ import annotations

import pytest

from captcha_ocr.charset import DEFAULT_CHARSET, Charset
from captcha_ocr.data import find_samples, load_samples, most_common_size, split_samples

from .conftest import SHARED_DATASET

pytestmark = [
    pytest.mark.dataset,
    pytest.mark.skipif(
        not SHARED_DATASET.is_dir(), reason=f"reference data set not found at {SHARED_DATASET}"
    ),
]


def test_reference_set_loads_with_the_published_charset_and_count() -> None:
    samples = find_samples(SHARED_DATASET)
    assert len(samples) == 1040
    assert Charset.from_labels(s.label for s in samples).chars == DEFAULT_CHARSET
    assert {len(s.label) for s in samples} == {5}
    assert len({s.label for s in samples}) == 1040
    assert most_common_size(samples) == (200, 50)


def test_reference_images_decode_to_the_model_input() -> None:
    samples = find_samples(SHARED_DATASET)
    train, val = split_samples(samples, 0.1, seed=42)
    assert (len(train), len(val)) == (936, 104)
    loaded = load_samples(val, 50, 200, 1)
    assert loaded.images.shape == (104, 50, 200, 1) and not loaded.failed
    # RGBA files whose alpha is always 255: grey background, dark text.
    assert 150 < loaded.images.mean() < 250
