"""Read captchas with an exported model: ONNX Runtime + NumPy + Pillow, never TensorFlow.

A :class:`Reader` is preprocessing (:func:`captcha_ocr.images.load_image`) + the ONNX model +
CTC decoding (:mod:`captcha_ocr.decode`). The ONNX file carries its own charset, input size and
blank index in its metadata, so a lone ``model.onnx`` is enough to read with.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captcha_ocr.basemodel import resolve_base
from captcha_ocr.charset import Charset
from captcha_ocr.config import ModelSpec
from captcha_ocr.decode import (
    align,
    allowed_mask,
    beam_search_decode,
    decode_batch,
    greedy_steps,
    restrict,
)
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, ImageSource, load_image
from captcha_ocr.metadata import (
    EXPORT_AGAIN,
    NOT_USABLE_KEY,
    spec_from_metadata,
    threshold_from_metadata,
)
from captcha_ocr.presets import PRESETS
from captcha_ocr.progress import progress_bar
from captcha_ocr.runfolder import ONNX_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CharPosition:
    """Where one character of a reading was read.

    ``steps``: the CTC time steps that emitted it (ascending); ``span``: the part of the
    image's width those steps cover, ``(left, right)`` as fractions of the width (0 to 1).
    """

    char: str
    steps: tuple[int, ...]
    span: tuple[float, float]


@dataclass(frozen=True)
class Prediction:
    """What a reader read.

    ``confidence`` is the model's probability of ``text``: with greedy decoding, the
    probability of the single best CTC path (the product over time steps of the largest class
    probability), a lower bound of the text's probability; with beam search, the sum over the
    CTC paths in the beam that collapse to ``text``. ``error`` is set (and ``text`` is None)
    only when ``read_batch(..., skip_errors=True)`` met an unreadable image. ``positions``
    (one per character of ``text``) is filled only when asked for (``positions=True``).
    """

    text: str | None
    confidence: float
    error: str | None = None
    positions: tuple[CharPosition, ...] | None = None


def step_columns(spec: ModelSpec, steps: int) -> int:
    """How many columns across the image a model's ``steps`` time steps lie on: step t lies in
    column ``t % columns`` (``columns == steps`` for a network that reads left to right).

    >>> step_columns(ModelSpec("reference", "abc", 50, 200, 3, 5), 52)  # a 4x13 map, by rows
    13
    """
    preset = PRESETS.get(spec.preset)
    stride = preset.row_by_row_stride if preset else None  # see Preset.row_by_row_stride
    columns = -(-spec.width // stride) if stride else steps
    return columns if 0 < columns <= steps and steps % columns == 0 else steps


def resolve_model_path(model: str | os.PathLike) -> Path:
    """A run folder, an ``.onnx`` file or ``"base"`` (the base model shipped in the package)
    -> the ``.onnx`` file, with a clear error if absent."""
    path = resolve_base(model)
    if path.is_dir():
        onnx_path = path / ONNX_FILE
        if not onnx_path.is_file():
            raise CaptchaOCRError(
                f"run folder {path} has no {ONNX_FILE}; create it with: captcha-ocr export {path}"
            )
        return onnx_path
    if not path.exists():
        raise CaptchaOCRError(f"model {path} not found (give a run folder or an .onnx file)")
    return path


# Where a min_confidence is asked for: the model's recommended reject threshold.
RECOMMENDED = "recommended"


def import_onnxruntime():
    """ONNX Runtime, imported with its usage telemetry off unless the environment already says
    otherwise: since 1.29 its Linux builds send usage events (model names, graph hashes) to
    Microsoft unless ``ORT_DISABLE_TELEMETRY`` is set, and reading captchas needs no network.
    (Set before the import: the library reads it when it starts.)"""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


class Reader:
    """Reads captchas with an exported ONNX model.

    >>> reader = Reader.load("runs/20261126-101500")      # doctest: +SKIP
    >>> reader.read("captchas/2b827.png")                  # doctest: +SKIP
    Prediction(text='2b827', confidence=0.998, error=None)
    >>> [p.text for p in reader.read_batch(["a.png", "b.png"])]  # doctest: +SKIP
    ['2b827', '3p4nn']
    """

    def __init__(self, session, spec: ModelSpec, name: str) -> None:
        self.session = session
        self.spec = spec
        self.charset = Charset(spec.charset)
        self.name = name
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name
        # Why training judged this model not usable (it did not learn); "" when it is usable.
        metadata = session.get_modelmeta().custom_metadata_map
        self.not_usable = metadata.get(NOT_USABLE_KEY, "")
        # The min_confidence chosen at export for 99 % precision on the run's validation
        # images (or the highest they allow; metrics.threshold_for_precision); None for models
        # exported without one.
        self.recommended_min_confidence = threshold_from_metadata(metadata)

    def min_confidence(self, value: float | str | None) -> float | None:
        """A reject threshold as given: a number, :data:`RECOMMENDED` (the model's own, chosen
        at export to keep 99 % precision on its validation images) or None (none)."""
        if value != RECOMMENDED:
            return None if value is None else float(value)
        if self.recommended_min_confidence is None:
            raise CaptchaOCRError(
                f"{self.name} has no recommended min_confidence (exported by an older version, "
                f"or without validation images); {EXPORT_AGAIN}, or give a number"
            )
        return self.recommended_min_confidence

    @classmethod
    def load(
        cls, model: str | os.PathLike, threads: int | None = None, warn_not_usable: bool = True
    ) -> Reader:
        """Open a run folder or an ``.onnx`` file. ``threads``: ONNX Runtime intra-op threads
        (None: ONNX Runtime's choice, one per core). A model that training marked not usable
        (it did not learn) loads, with a warning unless ``warn_not_usable`` is False."""
        ort = import_onnxruntime()
        if threads is not None and threads < 0:
            raise CaptchaOCRError(f"threads must be >= 0 (0: one per core), got {threads}")
        path = resolve_model_path(model)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for corrupt files
            first_line = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise CaptchaOCRError(
                f"{path} is not a readable ONNX model: {first_line[:300]}"
            ) from None
        metadata = session.get_modelmeta().custom_metadata_map
        spec = spec_from_metadata(metadata, str(path))
        expected = [spec.height, spec.width, spec.channels]
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or list(shape[1:]) != expected:
            raise CaptchaOCRError(
                f"{path}: the model's input {shape} does not match its metadata {expected}; "
                f"{EXPORT_AGAIN}"
            )
        output = session.get_outputs()[0].shape
        classes = output[-1] if len(output) == 3 else None
        if len(output) != 3 or (isinstance(classes, int) and classes != spec.num_classes):
            raise CaptchaOCRError(
                f"{path}: the model's output {output} does not match the {spec.num_classes} "
                f"classes (charset + blank) of its metadata; {EXPORT_AGAIN}"
            )
        reader = cls(session, spec, name=path.parent.name if path.name == ONNX_FILE else path.stem)
        if reader.not_usable and warn_not_usable:
            log.warning(
                "%s is marked not usable: %s; its readings are likely wrong (train again, see "
                "the README's 'When training does not learn')",
                path,
                reader.not_usable,
            )
        return reader

    @property
    def time_steps(self) -> int | None:
        """T, the most CTC steps (so the longest text) the model can output; None if dynamic."""
        steps = self.session.get_outputs()[0].shape[1]
        return steps if isinstance(steps, int) else None

    def preprocess(self, image: ImageSource) -> np.ndarray:
        """Any image -> ``(H, W, C)`` uint8 model input (the shared preprocessing path)."""
        return load_image(image, self.spec.height, self.spec.width, self.spec.channels)

    def log_probs(self, batch: np.ndarray) -> np.ndarray:
        """Run the model: ``(B, H, W, C)`` pixels -> ``(B, T, classes)`` log-probabilities."""
        return self.session.run([self._output_name], {self._input_name: batch.astype(np.float32)})[
            0
        ]

    def decode(
        self,
        log_probs: np.ndarray,
        beam_width: int = 1,
        allowed_chars: str | None = None,
        positions: bool = False,
    ) -> list[Prediction]:
        """CTC-decode ``(B, T, classes)`` log-probabilities into predictions; with
        ``positions``, each also says where each of its characters was read."""
        log_probs = restrict(log_probs, allowed_mask(self.charset, allowed_chars))
        lengths = self.spec.label_lengths
        if beam_width <= 1:
            decoded = decode_batch(log_probs, lengths)
        else:
            decoded = [beam_search_decode(row, beam_width, lengths) for row in log_probs]
        predictions = [Prediction(self.charset.decode(classes), prob) for classes, prob in decoded]
        if not positions:
            return predictions
        return [
            dataclasses.replace(p, positions=self._positions(row, classes, beam_width))
            for p, row, (classes, _) in zip(predictions, log_probs, decoded)
        ]

    def _positions(
        self, log_probs: np.ndarray, classes: list[int], beam_width: int
    ) -> tuple[CharPosition, ...]:
        """Where each of ``classes``, decoded from ``(T, classes)`` log-probabilities, was read:
        on the best path (greedy), or on the text's most probable path (beam search, or a
        greedy read held to the trained lengths)."""
        emitted = greedy_steps(log_probs) if beam_width <= 1 else []
        if len(emitted) != len(classes):
            emitted = align(log_probs, classes)
        columns = step_columns(self.spec, len(log_probs))
        positions = []
        for c, steps in zip(classes, emitted):
            lying = [t % columns for t in steps]
            span = (min(lying) / columns, (max(lying) + 1) / columns)
            positions.append(CharPosition(self.charset.decode([c]), tuple(steps), span))
        return tuple(positions)

    def read(
        self,
        image: ImageSource,
        beam_width: int = 1,
        allowed_chars: str | None = None,
        positions: bool = False,
    ) -> Prediction:
        """Read one image (a path, bytes, a PIL image or a NumPy array)."""
        batch = self.preprocess(image)[None]
        return self.decode(self.log_probs(batch), beam_width, allowed_chars, positions)[0]

    def read_batch(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 64,
        beam_width: int = 1,
        allowed_chars: str | None = None,
        skip_errors: bool = False,
        progress: bool = False,
        positions: bool = False,
    ) -> list[Prediction]:
        """Read many images; decoding of the next batch runs in threads while the model runs.

        With ``skip_errors``, an unreadable image gives a Prediction with ``error`` set;
        otherwise it raises :class:`~captcha_ocr.images.ImageLoadError`. With ``positions``,
        each prediction says where each character was read.
        """
        if batch_size < 1:
            raise CaptchaOCRError(f"batch_size must be >= 1 (got {batch_size})")
        predictions: list[Prediction] = []
        with progress_bar(total=len(images), desc="reading", unit="img", enabled=progress) as bar:
            for chunk in self._decoded_chunks(images, batch_size):
                good = [i for i, item in enumerate(chunk) if isinstance(item, np.ndarray)]
                results: list[Prediction] = []
                if good:
                    batch = np.stack([chunk[i] for i in good])
                    log_probs = self.log_probs(batch)
                    results = self.decode(log_probs, beam_width, allowed_chars, positions)
                by_index = dict(zip(good, results))
                for i, item in enumerate(chunk):
                    if i in by_index:
                        predictions.append(by_index[i])
                    elif skip_errors:
                        predictions.append(Prediction(None, 0.0, error=str(item)))
                    else:
                        raise item
                bar.update(len(chunk))
        return predictions

    def _decoded_chunks(
        self, images: Sequence[ImageSource], batch_size: int
    ) -> Iterator[list[np.ndarray | ImageLoadError]]:
        """Decode images in chunks, one chunk ahead of the caller (Pillow and ONNX Runtime
        both release the GIL, so decoding overlaps inference)."""

        def decode_one(image: ImageSource) -> np.ndarray | ImageLoadError:
            try:
                return self.preprocess(image)
            except ImageLoadError as error:
                return error

        starts = range(0, len(images), max(1, batch_size))
        with concurrent.futures.ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
            pending = None
            for start in starts:
                future = [pool.submit(decode_one, im) for im in images[start : start + batch_size]]
                if pending is not None:
                    yield [f.result() for f in pending]
                pending = future
            if pending is not None:
                yield [f.result() for f in pending]
