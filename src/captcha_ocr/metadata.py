"""The ONNX file's metadata: a :class:`~captcha_ocr.config.ModelSpec` written as key/value
strings by export, and read back (as JSON data, never as code) by the reader.

The JSON spec under :data:`METADATA_KEY` is what readers use; the other keys are readable copies
for tools such as Netron. Keras-free and ``onnx``-free, so that infer and the tests use the same
two functions as export.

>>> from captcha_ocr.config import ModelSpec
>>> spec = ModelSpec("tiny", "abc", 32, 100, 1, 5)
>>> spec_from_metadata(metadata_from_spec(spec), "model.onnx") == spec
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict

from captcha_ocr.config import ModelSpec, from_dict, validate_model_spec
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.version import __version__

METADATA_KEY = "captcha_ocr"  # JSON of the ModelSpec, in the ONNX file's metadata_props
# Present (with the reason) when training judged the model not usable: it did not learn.
NOT_USABLE_KEY = "not_usable"
# JSON {"min_confidence", "precision", "target", "accepts", "images"}: the reject threshold
# chosen for REJECT_PRECISION ("target") on the run's validation images, the precision it kept
# there (below the target when none reached it, null when it keeps none; older models store
# the target), the share it accepted, and how many images.
THRESHOLD_KEY = "recommended_threshold"
EXPORT_AGAIN = "export the model again with: captcha-ocr export RUN_DIR"  # ends the errors


def metadata_from_spec(spec: ModelSpec, **extra: str) -> dict[str, str]:
    """The metadata of a model of ``spec`` (``extra``: more keys, e.g. ``quantization``)."""
    return {
        METADATA_KEY: json.dumps(asdict(spec), ensure_ascii=False),
        "charset": spec.charset,
        "blank_index": str(spec.blank_index),
        "input_height": str(spec.height),
        "input_width": str(spec.width),
        "input_channels": str(spec.channels),
        "preset": spec.preset,
        "captcha_ocr_version": __version__,
        **extra,
    }


def spec_from_metadata(metadata: Mapping[str, str], source: str) -> ModelSpec:
    """The ModelSpec in ``metadata``, checked; ``source`` names the file in errors."""
    if METADATA_KEY not in metadata:
        raise CaptchaOCRError(
            f"{source} has no captcha-ocr metadata; export it with: captcha-ocr export RUN_DIR"
        )
    try:
        data = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        raise CaptchaOCRError(
            f"{source}: captcha-ocr metadata is not valid JSON; {EXPORT_AGAIN}"
        ) from None
    try:
        spec = from_dict(ModelSpec, data, prefix="metadata.")
    except CaptchaOCRError as error:
        raise CaptchaOCRError(
            f"{source}: bad captcha-ocr metadata ({error}); {EXPORT_AGAIN}"
        ) from None
    try:
        # A reader needs no network builder: a preset this version does not know still reads.
        validate_model_spec(spec, known_preset=False)
    except CaptchaOCRError as error:
        raise CaptchaOCRError(
            f"{source}: captcha-ocr metadata is inconsistent ({error}; it says blank_index "
            f"{spec.blank_index}, input {spec.height}x{spec.width}x{spec.channels}); {EXPORT_AGAIN}"
        ) from None
    return spec


def write_metadata(proto, metadata: Mapping[str, str]) -> None:
    """Replace the metadata of an ONNX ``ModelProto`` with ``metadata``."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def threshold_from_metadata(metadata: Mapping[str, str]) -> float | None:
    """The recommended ``min_confidence`` of a model, or None when its export chose none."""
    try:
        value = float(json.loads(metadata[THRESHOLD_KEY])["min_confidence"])
    except (KeyError, TypeError, ValueError):  # absent (older export) or not ours
        return None
    return value if 0.0 <= value <= 1.0 else None
