"""Is a CTC training learning? A verdict from its history alone (no Keras, no files).

A CTC model first learns to answer "blank" everywhere: its loss falls fast to the value of an
answer that ignores the image, then sits there (the blank plateau) until the network finds
the characters. On a hard style it can sit there for a whole run, while its validation CER
wanders between 0.9 and 1 because a few guessed characters line up with the labels by
chance: a CER threshold cannot tell such a run from one that learned.

What does tell them apart:

* a captcha read exactly right. A model on the plateau never reads a whole label right
  (six characters guessed right in order by chance is ~1e-9), while a learning model reads
  a few percent right soon after it leaves the plateau;
* a falling training loss. Leaving the plateau shows first in the loss, epochs before a
  whole captcha is read right, so a loss that still falls is never called stuck.

History rows are the rows of ``history.csv``: ``epoch``, ``loss`` (training), ``val_wer``
(share of validation captchas read wrong; exact accuracy is ``1 - val_wer``) and more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Exact validation accuracy at which a run has certainly left the plateau.
LEARNED_ACCURACY = 0.02

# "Still falling": the best training loss of the last LOSS_WINDOW epochs is at least
# LOSS_DROP below the best loss before them. Measured on rkn_securimage (tests/histories): the
# default run that stalled drifted 0.3-1.1 % per 5 epochs from epoch 11 on (21.9 -> 21.8); a
# run that crept down the plateau (instance-normalised input) fell 2.3-4.9 % per 5 epochs;
# runs that leave the plateau fall 10-30 % per 5 epochs.
LOSS_WINDOW = 5
LOSS_DROP = 0.015


def exact_accuracy(row: Mapping[str, float]) -> float:
    """The share of validation captchas read exactly right in one history row."""
    if "val_acc" in row:
        return float(row["val_acc"])
    return 1.0 - float(row["val_wer"])


def has_learned(history: Sequence[Mapping[str, float]]) -> bool:
    """True once some epoch read at least :data:`LEARNED_ACCURACY` of validation captchas."""
    return any(exact_accuracy(row) >= LEARNED_ACCURACY for row in history)


def loss_still_falling(history: Sequence[Mapping[str, float]]) -> bool:
    """True when the last :data:`LOSS_WINDOW` epochs beat the earlier best training loss by
    :data:`LOSS_DROP` (or when there are too few epochs to say). The first epoch is left out:
    its loss is that of the random start."""
    losses = [float(row["loss"]) for row in history[1:]]
    if len(losses) <= LOSS_WINDOW:
        return True
    before, recent = min(losses[:-LOSS_WINDOW]), min(losses[-LOSS_WINDOW:])
    return recent < (1.0 - LOSS_DROP) * before


def is_stuck(history: Sequence[Mapping[str, float]]) -> bool:
    """On the blank plateau and not leaving it: no validation captcha read right (beyond
    :data:`LEARNED_ACCURACY`) and a training loss that no longer falls.

    >>> flat = [{"loss": 22.0 - 0.02 * k, "val_wer": 1.0} for k in range(20)]
    >>> is_stuck(flat), is_stuck(flat[:4])
    (True, False)
    >>> is_stuck(flat[:-1] + [{"loss": 21.6, "val_wer": 0.9}])
    False
    """
    return not has_learned(history) and not loss_still_falling(history)
