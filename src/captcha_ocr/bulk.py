"""Bulk reading on Ray Data: millions of stored captchas, on one machine or a Ray cluster.

The data flows::

    SOURCE (folder, file list or glob; local, s3://, gs://, ...)  -> paths, listed by the driver
      -> Ray Data map tasks: fetch and decode each image (images.load_image, the one
         preprocessing path); Ray fuses them into the actors' processes (see predictions)
      -> actor pool: one Reader per actor (loaded once, one ONNX Runtime thread) runs the
         model and CTC decoding (Reader.log_probs, Reader.decode) on batches
      -> rows (path, text, confidence, error) streamed back to the driver, written as
         Parquet or JSONL shards

One row per listed path, always: an image that cannot be fetched or decoded is a row with
``error`` set (and ``text`` None), never a failed job. Ray restarts a killed actor and runs
its batches again (Ray Data's actor defaults); its streaming executor hands each
output block to the driver once, so every row arrives exactly once.

Ray is an optional extra (``pip install 'captcha-ocr[scale]'``) and imported only here, inside
the functions that need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captcha_ocr.bulk_io import COLUMNS, INSTALL_HINT, ShardWriter, fetch, list_images
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, load_image
from captcha_ocr.infer import Reader, resolve_model_path
from captcha_ocr.progress import progress_bar

# Paths per Ray block: small enough that a retried task redoes little work and blocks spread
# over many workers, large enough that Ray's per-task overhead (~ms) stays under 1 % of it.
PATHS_PER_BLOCK = 1000


@dataclass(frozen=True)
class BulkSummary:
    """What a bulk read did. ``seconds``: from the listed paths to the last row, Ray's
    start and the actors' included. ``rows`` holds every row (dicts with :data:`COLUMNS`)
    only when no ``out`` was given; with ``out`` they are in its shards."""

    count: int
    failed: int
    seconds: float
    out: str | None = None
    first_error: str | None = None
    rows: list[dict] = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def import_ray():
    """The ``ray`` module with ``ray.data``, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data  # the part we use; `pip install ray` alone lacks its packages
    except ImportError as error:
        raise CaptchaOCRError(
            f"--engine ray needs Ray Data ({error.name or 'ray'} is missing): {INSTALL_HINT}"
        ) from None
    return ray


# --- the Ray stages ------------------------------------------------------------------------


def decode_images(
    batch: dict[str, np.ndarray], height: int, width: int, channels: int
) -> dict[str, np.ndarray]:
    """A Ray task's work: paths ``(B,)`` -> model inputs ``(B, H, W, C)`` uint8 and errors
    ``(B,)`` ("" when the image was read; its pixels are zeros otherwise)."""
    paths = batch["path"]
    pixels = np.zeros((len(paths), height, width, channels), np.uint8)
    errors = np.full(len(paths), "", dtype=object)
    for i, path in enumerate(paths):
        try:
            pixels[i] = load_image(fetch(str(path)), height, width, channels)
        except ImageLoadError as error:
            errors[i] = str(error).replace("<bytes>", str(path), 1)
    return {"path": paths, "pixels": pixels, "error": errors}


class ModelActor:
    """One per Ray actor: a :class:`~captcha_ocr.infer.Reader` loaded once, on one ONNX Runtime
    thread, that reads batches of decoded images into rows (:data:`COLUMNS`; text "" on error
    rows until :func:`read_dataset` turns it into None)."""

    def __init__(self, model_bytes: bytes, beam_width: int = 1, allowed_chars: str | None = None):
        # The model travels as bytes, so cluster nodes need no copy of the file.
        folder = tempfile.mkdtemp(prefix="captcha-ocr-model-")
        try:
            path = Path(folder) / "model.onnx"
            path.write_bytes(model_bytes)
            self.reader = Reader.load(path, threads=1, warn_not_usable=False)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.beam_width, self.allowed_chars = beam_width, allowed_chars

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        texts = np.full(len(errors), "", dtype=object)
        confidence = np.zeros(len(errors), np.float64)
        good = np.flatnonzero(errors == "")
        if len(good):
            log_probs = self.reader.log_probs(batch["pixels"][good])  # (G, T, classes)
            for i, p in zip(
                good, self.reader.decode(log_probs, self.beam_width, self.allowed_chars)
            ):
                texts[i], confidence[i] = p.text, p.confidence
        return {"path": batch["path"], "text": texts, "confidence": confidence, "error": errors}


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    ray = import_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def predictions(
    model: str | os.PathLike,
    paths: Sequence[str],
    *,
    batch_size: int = 64,
    actors: int | None = None,
    beam_width: int = 1,
    allowed_chars: str | None = None,
):
    """A lazy ``ray.data.Dataset`` of rows (path, text, confidence, error; ``text`` "" on error
    rows) for ``paths`` (see :func:`list_images`). Needs Ray started (``ray.init``).

    ``actors``: model actors, one CPU each (default: all the cluster's CPUs). Both stages ask
    one CPU, so Ray Data fuses the decoding tasks into the actors' processes: each CPU fetches,
    decodes and reads its own images, and no pixels cross Ray's object store. (Unfused, actors
    on every CPU would leave none to decode on.)
    """
    ray = import_ray()
    if batch_size < 1:
        raise CaptchaOCRError(f"batch_size must be >= 1 (got {batch_size})")
    cpus = cluster_cpus()
    actors = cpus if actors is None else actors
    if not 1 <= actors <= cpus:
        # Ray would wait for ever for actors it has no CPU for.
        raise CaptchaOCRError(f"actors must be 1 to {cpus}, the Ray cluster's CPUs (got {actors})")
    spec = Reader.load(model, threads=1, warn_not_usable=False).spec
    model_bytes = resolve_model_path(model).read_bytes()
    # At least two blocks per actor, so that a small job still keeps every actor busy; and no
    # more actors than blocks (each would start, load the model, and wait).
    blocks = max(-(-len(paths) // PATHS_PER_BLOCK), min(len(paths), 2 * actors), 1)
    actors = min(actors, blocks)
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    dataset = dataset.map_batches(
        decode_images,
        batch_format="numpy",
        batch_size=None,
        fn_kwargs={"height": spec.height, "width": spec.width, "channels": spec.channels},
    )
    return dataset.map_batches(
        ModelActor,
        batch_format="numpy",
        batch_size=batch_size,
        fn_constructor_kwargs={
            "model_bytes": model_bytes,
            "beam_width": beam_width,
            "allowed_chars": allowed_chars,
        },
        # Ray Data restarts a killed actor and runs its unfinished batches again (its actor
        # defaults: max_restarts=-1, max_task_retries=-1); tests/test_bulk.py checks that.
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )


# --- running it and writing the rows ------------------------------------------------------


@contextlib.contextmanager
def connected(address: str | None = None) -> Iterator[None]:
    """Ray, connected: the running instance if this process has one, else ``address``
    (``auto``: the cluster on this machine; ``ray://host:10001``: a remote one; None: a new
    local instance on this machine's cores), shut down on exit if started here."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    options = {"logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise CaptchaOCRError(f"cannot connect to Ray at {address}: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()


def read_dataset(
    model: str | os.PathLike,
    source: str | Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    address: str | None = None,
    batch_size: int = 64,
    actors: int | None = None,
    beam_width: int = 1,
    allowed_chars: str | None = None,
    progress: bool = False,
) -> BulkSummary:
    """Read every image of ``source`` on Ray; write the rows to ``out`` or return them.

    ``source``: a folder, a file list, a glob or an image, or several (:func:`list_images`).
    ``out``: ``NAME.parquet`` or ``NAME.jsonl``, a folder of shards (``part-00000.parquet``,
    ...) written when the job ends (locally: into a temporary folder renamed onto ``out``);
    it must not exist yet. Without ``out``, :attr:`BulkSummary.rows` holds the rows.

    >>> summary = read_dataset("runs/latest", "s3://bucket/captchas/",  # doctest: +SKIP
    ...                        out="s3://bucket/read.parquet", address="auto")
    >>> summary.count, summary.failed                                      # doctest: +SKIP
    (1000000, 12)
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    writer = ShardWriter(str(out)) if out is not None else None
    # A clear error for a bad model, and its not-usable warning, before Ray starts.
    Reader.load(model, threads=1)
    paths = list_images([os.fspath(s) for s in sources])
    started = time.perf_counter()
    count = failed = 0
    first_error = None
    rows: list[dict] = []
    with connected(address), _quiet_ray_data(), contextlib.ExitStack() as stack:
        if writer is not None:
            stack.enter_context(writer)
        dataset = predictions(
            model,
            paths,
            batch_size=batch_size,
            actors=actors,
            beam_width=beam_width,
            allowed_chars=allowed_chars,
        )
        bar = stack.enter_context(
            progress_bar(total=len(paths), desc="reading", unit="img", enabled=progress)
        )
        for batch_rows in _batches(dataset):
            for row in batch_rows:
                if row["error"] is not None:
                    failed += 1
                    first_error = first_error or row["error"]
            count += len(batch_rows)
            if writer is None:
                rows.extend(batch_rows)
            else:
                writer.add(batch_rows)
            bar.update(len(batch_rows))
    if count != len(paths):  # Ray's contract; checked because a silent loss would be the worst
        raise CaptchaOCRError(f"Ray returned {count} rows for {len(paths)} images; run it again")
    seconds = time.perf_counter() - started
    return BulkSummary(count, failed, seconds, writer and writer.out, first_error, rows)


def _batches(dataset) -> Iterator[list[dict]]:
    """The dataset's rows as they arrive, a block at a time; a failed Ray job (not a bad image:
    those are rows) becomes one clear error."""
    ray = import_ray()
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield _rows(batch)
    except ray.exceptions.RayError as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise CaptchaOCRError(f"the Ray job failed: {lines[-1][:300]}") from None


def _rows(batch: dict[str, np.ndarray]) -> list[dict]:
    """A batch of columns -> rows, with None (not "") for the text and error of error rows."""
    return [
        {
            "path": str(path),
            "text": None if error else str(text),
            "confidence": float(confidence),
            "error": str(error) or None,
        }
        for path, text, confidence, error in zip(*(batch[c] for c in COLUMNS))
    ]


@contextlib.contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's own progress bars, start banner and info lines off (and its warning that the
    bars are off): the driver draws one bar itself."""
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = context.print_on_execution_start = False
    loggers = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
