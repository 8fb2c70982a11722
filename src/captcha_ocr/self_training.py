"""Self-training rounds: a trained run reads the unlabeled images, and a new run trains on the
person's labels and the surest reads; then again, with the better model.

``captcha-ocr train DATA --unlabeled FOLDER`` runs the rounds after the first training. Each
round's labels file (``pseudo_labels.csv`` in the folder of the run that read them) keeps the
first run's validation images as validation (``part`` column), so every round is judged on
the same person-labeled images, none of them ever pseudo-labeled; ``latest`` ends on the round
that reads them best. On captcha_images_v2, 50 labels and two rounds over 784 unlabeled images
read 98.71 % of the held-out fifth against 97.57 % on the labels alone (mean of 3 seeds;
``bench/RESULTS.md``, section self-training-cv2-50); on rkn_securimage, two rounds by hand
from 1,218 labels read about as much as 2,436 typed labels (section pseudo-labels). Each
round is a full training: the rounds multiply the time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from captcha_ocr.config import TrainConfig
from captcha_ocr.data import read_labels_file
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.export import export_run
from captcha_ocr.fit import TrainResult
from captcha_ocr.plateau import exact_accuracy
from captcha_ocr.progress import READ_PROGRESS_FROM
from captcha_ocr.pseudo_labels import pseudo_label, write_pseudo_csv
from captcha_ocr.runfolder import PSEUDO_CSV, VAL_CSV, point_latest
from captcha_ocr.train import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Round:
    """One training of the loop: the first (``pseudo_labels`` 0) or a self-training round."""

    number: int
    result: TrainResult
    pseudo_labels: int  # reads of unlabeled images it trained on

    @property
    def val_accuracy(self) -> float:
        return exact_accuracy(self.result.best) if self.result.best else 0.0

    @property
    def val_images(self) -> int:
        return len(read_labels_file(self.result.run_dir / VAL_CSV))


def self_train(
    first: TrainResult,
    images: Sequence[str],
    out: str | Path,
    config: TrainConfig,
    rounds: int,
    min_confidence: float | str,
    progress: bool = True,
) -> list[Round]:
    """After ``first`` (trained and exported), ``rounds`` more trainings under ``out`` with
    ``config``, each on the previous run's labels and its reads of ``images`` with at least
    ``min_confidence``; each is exported. Stops early, keeping the rounds done, at a round
    that did not learn (its reads would teach its mistakes), keeps no read, fails, or is
    interrupted (Ctrl-C). ``latest`` then points at the round with the best validation
    accuracy (the later one on a tie: it learned from more images). Returns every round."""
    if rounds < 1:
        raise CaptchaOCRError(f"rounds must be 1 or more, got {rounds}")
    if first.state.interrupted:
        raise CaptchaOCRError("the first run was interrupted: no self-training round was run")
    if first.not_usable:
        raise CaptchaOCRError(
            f"the first run did not learn ({first.not_usable}): its reads would teach its "
            "mistakes, so no self-training round was run"
        )
    config = carry_rescue(first.config, config)
    done = [Round(1, first, 0)]
    log.info("round 1 of %d: validation accuracy %.2f%%", rounds + 1, 100 * done[0].val_accuracy)
    try:
        for number in range(2, rounds + 2):
            next_round = _train_round(number, rounds + 1, done[-1], images, out, config,
                                      min_confidence, progress)  # fmt: skip
            if next_round is None:
                break
            done.append(next_round)
            if next_round.result.state.interrupted or next_round.result.not_usable:
                break
    except KeyboardInterrupt:  # between trainings (reading, export): keep the rounds done
        log.warning("interrupted: no later round; the rounds done are kept")
    except CaptchaOCRError as error:
        log.warning("round %d failed: %s; the rounds done are kept", len(done) + 1, error)
    finally:  # a round's training pointed latest at its own folder as it began
        point_latest(best_round(done).result.run_dir)
    return done


def carry_rescue(first: TrainConfig, config: TrainConfig) -> TrainConfig:
    """``config`` with the remedy that rescued the first run from the blank plateau, if one
    did (``--pretrain synth``, or another seed): the rounds start as the first run learned."""
    if first.rescue or not config.rescue:
        return config  # the first run was not rescued
    return dataclasses.replace(config, pretrain=first.pretrain, seed=first.seed)


def _train_round(
    number: int,
    total: int,
    previous: Round,
    images: Sequence[str],
    out: str | Path,
    config: TrainConfig,
    min_confidence: float | str,
    progress: bool,
) -> Round | None:
    """One round: the previous run reads ``images``, a new run trains on its labels and the
    kept reads, and is exported. None when no read was kept (a round would learn nothing new)."""
    run_dir = previous.result.run_dir
    reads = pseudo_label(
        run_dir, images, min_confidence, progress=progress and len(images) > READ_PROGRESS_FROM
    )
    if not reads.kept:
        log.warning("round %d: %s: no round to train", number, reads.describe())
        return None
    labels_file = write_pseudo_csv(reads, run_dir / PSEUDO_CSV)
    log.info(
        "round %d of %d: %s; training on the %d labels and %d pseudo-labels (%s)",
        number, total, reads.describe(), reads.labels, len(reads.kept), labels_file,
    )  # fmt: skip
    result = train(labels_file, out, config, progress=progress)
    export_run(result.run_dir)
    this = Round(number, result, len(reads.kept))
    log.info(
        "round %d of %d: validation accuracy %.2f%% (round %d: %.2f%%)",
        number, total, 100 * this.val_accuracy, previous.number, 100 * previous.val_accuracy,
    )  # fmt: skip
    if result.state.interrupted:  # Ctrl-C: keep what was done, start nothing new
        log.warning(
            "round %d was interrupted: its best checkpoint is exported and no later round "
            "runs; to go on: captcha-ocr train --resume %s, then captcha-ocr pseudo-label %s "
            "IMAGES --out more.csv and captcha-ocr train more.csv",
            number, result.run_dir, result.run_dir,
        )  # fmt: skip
    elif result.not_usable:
        log.warning("round %d did not learn (%s); no later round", number, result.not_usable)
    return this


def best_round(rounds: Sequence[Round]) -> Round:
    """The usable round that reads the shared validation images best, the later on a tie.

    >>> from types import SimpleNamespace as S
    >>> runs = [S(best={"val_wer": w}, not_usable="") for w in (0.10, 0.05, 0.05)]
    >>> best_round([Round(k + 1, r, 0) for k, r in enumerate(runs)]).number
    3
    """
    usable = [r for r in rounds if not r.result.not_usable] or list(rounds)
    return max(reversed(usable), key=lambda r: r.val_accuracy)


def format_rounds(rounds: Sequence[Round]) -> str:
    """One line a round: its run folder, what it trained on, its validation accuracy; the
    best marked."""
    best = best_round(rounds)
    return "\n".join(
        f"round {r.number}: {r.result.run_dir} ({r.pseudo_labels:,} pseudo-labels): "
        f"validation accuracy {r.val_accuracy:.2%} of {r.val_images:,}"
        + ("  <- best (latest)" if r is best else "")
        for r in rounds
    )
