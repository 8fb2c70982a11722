"""The labeling queue: which unlabeled image comes next, and the model's suggestions.

Before any model the order is a seeded shuffle. Once a round has trained a model, the
model reads every unlabeled image (:class:`Suggestions`) and an order policy ranks them by
the confidence of its reading:

* ``least``: least confident first (the images the model learns most from; most are typed);
* ``most``: most confident first (mostly one-key accepts; the training set grows cheaply);
* ``mix``: the two alternate, one least confident, then one most confident;
* ``random``: the seeded shuffle, suggestions or not (a baseline).

``bench/labeling.py --order`` measures which one reaches an accurate model with fewest keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from captcha_ocr.infer import Reader
from captcha_ocr.label.store import Image

log = logging.getLogger(__name__)

ORDERS = ("mix", "least", "most", "random")
DEFAULT_ORDER = "mix"  # until bench/labeling.py has measured the policies on real sets

READ_BATCH = 64  # images per model call when suggestions are refreshed
READ_CHUNK = 8 * READ_BATCH  # images read between two looks at whether the app is stopping


@dataclass(frozen=True)
class Suggestion:
    """What the model read in an image, and its confidence (0 to 1)."""

    text: str
    confidence: float


def shuffled_ranks(ids: Sequence[str], seed: int) -> dict[str, int]:
    """A seeded random rank for each id (the order before any model, and the tie-break)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i]: rank for rank, i in enumerate(order)}


def queue_order(
    ids: Sequence[str],
    suggestions: Mapping[str, Suggestion],
    ranks: Mapping[str, int],
    order: str,
) -> list[str]:
    """``ids`` in queue order. Ids without a suggestion (no model yet, or an image the model
    could not read) keep their shuffled rank and come after those with one.

    >>> s = {"a": Suggestion("x", 0.9), "b": Suggestion("y", 0.1), "c": Suggestion("z", 0.5)}
    >>> queue_order(["a", "b", "c"], s, {"a": 0, "b": 1, "c": 2}, "mix")
    ['b', 'a', 'c']
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    by_rank = sorted(ids, key=lambda i: ranks[i])
    if order == "random":
        return by_rank
    known = [i for i in by_rank if i in suggestions]
    unknown = [i for i in by_rank if i not in suggestions]
    rising = sorted(known, key=lambda i: suggestions[i].confidence)  # stable: ties by rank
    if order == "least":
        return rising + unknown
    falling = sorted(known, key=lambda i: -suggestions[i].confidence)
    if order == "most":
        return falling + unknown
    mixed, seen = [], set()
    for low, high in zip(rising, falling):
        for i in (low, high):
            if i not in seen:
                seen.add(i)
                mixed.append(i)
    return mixed + unknown


class Suggestions:
    """The latest model's readings of the unlabeled images, refreshed in the background."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Suggestion] = {}
        self.model: str | None = None  # the run folder (or .onnx) the suggestions come from
        self.refreshing = False
        self.failed: dict[str, str] = {}  # image id -> why the model could not read it
        # Set when the app shuts down: a refresh stops between chunks. A thread still inside
        # ONNX Runtime when the interpreter exits can abort it ("terminate called without an
        # active exception", seen once in a test under load).
        self._stopping = threading.Event()

    def stop(self) -> None:
        """End a refresh in progress at its next chunk, keeping the suggestions there are."""
        self._stopping.set()

    def get(self) -> dict[str, Suggestion]:
        with self._lock:
            return dict(self._by_id)

    def refresh(
        self, reader: Reader, model: str, images: Sequence[Image], charset: str | None = None
    ) -> None:
        """Read ``images`` with ``reader`` (batched) and replace the suggestions; the old ones
        stay in use until the new ones are ready. With ``charset`` (``--charset``), readings
        keep to the characters a label may have (a suggestion the store would refuse helps
        nobody)."""
        self.refreshing = True
        try:
            allowed = "".join(c for c in charset if c in reader.charset.chars) if charset else ""
            paths, predictions = [i.path for i in images], []
            for start in range(0, len(paths), READ_CHUNK):
                if self._stopping.is_set():
                    return
                predictions += reader.read_batch(
                    paths[start : start + READ_CHUNK],
                    READ_BATCH,
                    allowed_chars=allowed or None,
                    skip_errors=True,
                )
            fresh, failed = {}, {}
            for image, prediction in zip(images, predictions):
                if prediction.text is None:
                    failed[image.id] = prediction.error or "unreadable"
                elif prediction.text:  # an empty reading suggests nothing
                    fresh[image.id] = Suggestion(prediction.text, float(prediction.confidence))
            with self._lock:
                self._by_id, self.model, self.failed = fresh, model, failed
            log.info("suggestions for %d image(s) from %s", len(fresh), model)
        finally:
            self.refreshing = False
