"""ONNX export of a run's best model, with self-describing metadata and a parity check.

The exported file takes raw 0-255 pixels ``(batch, H, W, C)`` float32 (any batch size) and
returns log-probabilities ``(batch, T, classes)``. Its ``metadata_props`` carry the charset,
blank index, input size and version, so a lone ``.onnx`` file can be read with. Before the
file replaces a previous export, the validation images go through Keras and ONNX Runtime, and
the export fails if they disagree.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from captcha_ocr.config import INT8_MAX_ACCURACY_DROP, ModelSpec, load_run_config, load_run_verdict
from captcha_ocr.data import load_samples, read_labels_file
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path
from captcha_ocr.infer import Reader, import_onnxruntime, resolve_model_path
from captcha_ocr.metadata import (
    NOT_USABLE_KEY,
    THRESHOLD_KEY,
    metadata_from_spec,
    write_metadata,
)
from captcha_ocr.metrics import REJECT_PRECISION, reads_to_show, threshold_for_precision
from captcha_ocr.runfolder import INT8_ONNX_FILE, ONNX_FILE, SUSPECTS_CSV, TRAIN_CSV, VAL_CSV
from captcha_ocr.version import __version__

log = logging.getLogger(__name__)

# Largest allowed difference in per-step probabilities between Keras and ONNX Runtime.
# Float32 reorderings give ~1e-6; a wrong graph rewrite gives 1e-2 and more.
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 256


class ParityError(CaptchaOCRError):
    """The exported model does not compute what the Keras model computes."""


def export_model(
    model,
    spec: ModelSpec,
    path: str | Path,
    check_images: np.ndarray | None = None,
    extra_metadata: dict[str, str] | None = None,
    fold_scaling: bool = True,
) -> Path:
    """Export a Keras model to ONNX at ``path`` (atomically), checking parity on
    ``check_images`` ``(N, H, W, C)`` before the file is put in place; ``extra_metadata``
    adds keys to the ONNX metadata (e.g. the run's verdict). ``fold_scaling`` moves the pixel
    scaling into the first kernels (:func:`captcha_ocr.model.fold_input_scaling`); False keeps
    it as a step of its own (``bench/read_speed.py --unfolded`` measures the difference)."""
    import onnx

    from captcha_ocr.model import fold_input_scaling
    from captcha_ocr.onnx_graph import tidy

    path = Path(path)
    # The same function, read faster; the parity check below compares it with ``model``.
    exported = fold_input_scaling(model) if fold_scaling else model
    sample = np.zeros((1, spec.height, spec.width, spec.channels), np.float32)
    exported(sample)  # Keras exports only a model that has been called
    with tempfile.TemporaryDirectory() as tmp_dir:
        raw = Path(tmp_dir) / "raw.onnx"
        with warnings.catch_warnings():
            # tf2onnx probes the removed np.object; NumPy's FutureWarning is noise to users.
            warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
            exported.export(str(raw), format="onnx", verbose=False)
        proto = tidy(onnx.load(str(raw)))
    write_metadata(proto, metadata_from_spec(spec, **(extra_metadata or {})))
    proto.doc_string = f"captcha-ocr {__version__} reader: charset {spec.charset!r}"
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        if check_images is not None and len(check_images):
            check_parity(model, tmp, check_images)
    return path


def check_parity(model, onnx_path: str | Path, images: np.ndarray) -> float:
    """Compare Keras and ONNX Runtime on ``images``; raise :class:`ParityError` if they differ.

    Returns the largest absolute difference of per-step probabilities.
    """
    batch = images.astype(np.float32)
    expected = np.exp(model.predict(batch, batch_size=128, verbose=0))
    reader = Reader.load(onnx_path, warn_not_usable=False)
    actual = np.concatenate(
        [np.exp(reader.log_probs(batch[i : i + 128])) for i in range(0, len(batch), 128)]
    )
    if expected.shape != actual.shape:
        raise ParityError(f"ONNX output shape {actual.shape} differs from Keras {expected.shape}")
    difference = float(np.max(np.abs(expected - actual)))
    same_text = (expected.argmax(-1) == actual.argmax(-1)).all(axis=1).mean()
    if not difference <= PARITY_TOLERANCE:
        raise ParityError(
            f"the ONNX export differs from the Keras model by {difference:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}; {same_text:.1%} of images decode the same); "
            "the exported file was not written"
        )
    log.info(
        "parity: Keras and ONNX Runtime agree within %.1e on %d images", difference, len(batch)
    )
    return difference


def quantize_int8(
    float_path: Path, int8_path: Path, spec: ModelSpec, calibration: np.ndarray
) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) with ONNX Runtime's tools,
    calibrated on ``calibration`` images ``(N, H, W, C)``; metadata is carried over."""
    import onnx

    ort = import_onnxruntime()  # first: it turns ONNX Runtime's telemetry off
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            name = (
                ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
                .get_inputs()[0]
                .name
            )
            self.batches = iter(
                {name: calibration[i : i + 16].astype(np.float32)}
                for i in range(0, len(calibration), 16)
            )

        def get_next(self):
            return next(self.batches, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp_dir:
        raw, prepared = Path(tmp_dir) / "int8.onnx", Path(tmp_dir) / "prepared.onnx"
        quant_pre_process(
            str(float_path), str(prepared), skip_symbolic_shape=True
        )  # shape inference
        quantize_static(
            str(prepared),
            str(raw),
            Images(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        )
        proto = onnx.load(str(raw))
    write_metadata(proto, metadata_from_spec(spec, quantization="int8"))
    with atomic_path(int8_path) as tmp:
        onnx.save(proto, str(tmp))
    return int8_path


def export_int8(
    run_dir: str | Path, max_drop: float = INT8_MAX_ACCURACY_DROP
) -> tuple[Path | None, float, float]:
    """Quantize a run's ``model.onnx`` to ``model.int8.onnx``, calibrated on its training
    images, and keep it only if its accuracy on the validation split is within ``max_drop``
    (a fraction: 0.01 is one point) of the float model's. Returns (path or None, float
    accuracy, int8 accuracy).
    """
    from captcha_ocr.evaluate import evaluate

    run_dir = Path(run_dir)
    spec, _, _ = load_run_config(run_dir)
    float_path = resolve_model_path(run_dir)  # with the error that says how to export
    for name in (TRAIN_CSV, VAL_CSV):
        if not (run_dir / name).is_file():
            raise CaptchaOCRError(
                f"{run_dir} has no {name}: int8 needs it to calibrate and check accuracy"
            )
    train_samples = read_labels_file(run_dir / TRAIN_CSV)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(train_samples), size=min(256, len(train_samples)), replace=False)
    calibration = load_samples(
        [train_samples[i] for i in chosen], spec.height, spec.width, spec.channels
    ).images
    int8_path = run_dir / INT8_ONNX_FILE
    candidate = run_dir / f".candidate.{INT8_ONNX_FILE}"
    try:
        quantize_int8(float_path, candidate, spec, calibration)
        val = read_labels_file(run_dir / VAL_CSV)
        float_accuracy = evaluate(Reader.load(float_path, warn_not_usable=False), val).accuracy
        int8_accuracy = evaluate(Reader.load(candidate, warn_not_usable=False), val).accuracy
        log.info(
            "validation accuracy: float %.2f%%, int8 %.2f%%",
            100 * float_accuracy,
            100 * int8_accuracy,
        )
        if int8_accuracy + max_drop + 1e-12 < float_accuracy:
            log.warning(
                "int8 model rejected: it loses %.2f points of accuracy (limit %.2f); keep using %s",
                100 * (float_accuracy - int8_accuracy),
                100 * max_drop,
                float_path.name,
            )
            return None, float_accuracy, int8_accuracy
        os.replace(candidate, int8_path)
        log.info("exported %s (%.0f KB)", int8_path, os.path.getsize(int8_path) / 1024)
        return int8_path, float_accuracy, int8_accuracy
    finally:
        if candidate.exists():
            candidate.unlink()


def export_run(run_dir: str | Path, parity_images: int = PARITY_IMAGES) -> Path:
    """Export a run folder's best model to ``RUN_DIR/model.onnx`` and check parity on its
    validation images.

    >>> export_run("runs/20261126-101500")  # doctest: +SKIP
    PosixPath('runs/20261126-101500/model.onnx')
    """
    from captcha_ocr.model import load_best_model  # Keras: only an export needs it

    run_dir = Path(run_dir)
    spec, _, _ = load_run_config(run_dir)
    model = load_best_model(run_dir)
    check_images = None
    val_csv = run_dir / VAL_CSV
    if val_csv.is_file():
        samples = read_labels_file(val_csv)[:parity_images]
        try:
            check_images = load_samples(samples, spec.height, spec.width, spec.channels).images
        except CaptchaOCRError as error:
            log.warning("parity check on validation images skipped: %s", error)
    if check_images is None:
        # No validation images to hand: random pixels still catch a wrong graph.
        rng = np.random.default_rng(0)
        check_images = rng.integers(0, 256, (16, spec.height, spec.width, spec.channels)).astype(
            np.uint8
        )
    usable, reason = load_run_verdict(run_dir)
    verdict = {} if usable else {NOT_USABLE_KEY: reason or "the run did not learn"}
    path = export_model(model, spec, run_dir / ONNX_FILE, check_images, verdict)
    if val_csv.is_file():
        add_reject_threshold(path, read_labels_file(val_csv))
    log.info("exported %s (%.0f KB)", path, os.path.getsize(path) / 1024)
    return path


def add_reject_threshold(onnx_path: Path, samples: list) -> float | None:
    """Choose the ``min_confidence`` that keeps ``REJECT_PRECISION`` of the readings of
    ``samples`` right (:func:`threshold_for_precision`) and store it in the ONNX file's
    metadata (atomically); None (and nothing stored) when no sample could be read."""
    import onnx

    reader = Reader.load(onnx_path, warn_not_usable=False)
    predictions = reader.read_batch([s.path for s in samples], skip_errors=True)
    read = [(p, s.label) for p, s in zip(predictions, samples) if p.error is None]
    if not read:
        return None
    chosen = threshold_for_precision(
        [p.confidence for p, _ in read], [p.text == label for p, label in read]
    )
    proto = onnx.load(str(onnx_path))
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    kept_any = not math.isnan(chosen.precision)  # NaN: the threshold keeps no read at all
    metadata[THRESHOLD_KEY] = json.dumps(
        {"min_confidence": chosen.min_confidence,
         "precision": chosen.precision if kept_any else None, "target": REJECT_PRECISION,
         "accepts": chosen.accepts, "images": len(read)}
    )  # fmt: skip
    write_metadata(proto, metadata)
    with atomic_path(onnx_path) as tmp:
        onnx.save(proto, str(tmp))
    kept = f"keeps {100 * chosen.precision:.1f}% precision" if kept_any else "keeps no read"
    summary = (
        f"min_confidence {chosen.min_confidence:.3f} {kept} on {len(read)} validation images "
        f"and accepts {100 * chosen.accepts:.1f}% of them (stored in the model; predict "
        "--min-confidence recommended)"
    )
    if kept_any and chosen.precision >= REJECT_PRECISION:
        log.info("reject threshold: %s", summary)
    else:
        log.warning(
            "reject threshold: no min_confidence keeps %.0f%% precision on enough validation "
            "images to show it: %s. Misreads cap it; where the model is right and the label "
            "wrong, fix the labels (%s lists them)",
            100 * REJECT_PRECISION,
            summary,
            SUSPECTS_CSV,
        )
    needed = reads_to_show(REJECT_PRECISION)
    if len(read) < needed:
        log.warning(
            "the reject threshold rests on %d validation images, fewer than the %d that can "
            "show %.0f%% precision; more labeled images (or --val-fraction) make it sounder",
            len(read),
            needed,
            100 * REJECT_PRECISION,
        )
    return chosen.min_confidence
