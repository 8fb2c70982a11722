"""The serve tests' model (tests/tiny_reader.py): the committed file still matches its script
and today's metadata contract, and it reads back what draw() writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from captcha_ocr.infer import Reader
from captcha_ocr.metadata import metadata_from_spec
from tests import tiny_reader


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader.load(tiny_reader.PATH, threads=1)


def test_it_carries_the_metadata_of_a_real_export(reader: Reader) -> None:
    metadata = reader.session.get_modelmeta().custom_metadata_map
    assert set(metadata) == set(metadata_from_spec(tiny_reader.SPEC))
    # The version is the one it was made with; every other field is the script's.
    assert reader.spec == dataclasses.replace(tiny_reader.SPEC, version=reader.spec.version)
    assert reader.time_steps == tiny_reader.STEPS


@pytest.mark.parametrize("text", ["", "a", "ab12", "aab", "4d4d4d44"])
def test_it_reads_what_draw_writes(reader: Reader, text: str) -> None:
    prediction = reader.read(tiny_reader.draw(text))
    assert prediction.text == text and prediction.confidence > 0.95
    assert reader.read(tiny_reader.draw(text), beam_width=4).text == text


def test_its_output_is_log_probabilities(reader: Reader) -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 32, 100, 1)).astype(np.uint8)
    log_probs = reader.log_probs(batch)
    assert log_probs.shape == (3, tiny_reader.STEPS, tiny_reader.SPEC.num_classes)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)
    assert len({p.text for p in reader.decode(log_probs)}) == 3  # noise reads differently


def test_the_committed_file_is_what_the_script_makes() -> None:
    pytest.importorskip("onnx")
    import onnx

    committed = onnx.load(str(tiny_reader.PATH))
    made = tiny_reader.build()
    assert committed.graph == made.graph, "run: python tests/tiny_reader.py"
    assert (committed.ir_version, committed.opset_import) == (made.ir_version, made.opset_import)
