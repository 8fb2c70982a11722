"""The blank-plateau detector, on made-up histories and on recorded ones (tests/histories)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from captcha_ocr.plateau import has_learned, is_stuck, loss_still_falling

HISTORIES = Path(__file__).parent / "histories"


def read(name: str) -> list[dict[str, float]]:
    with open(HISTORIES / name, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def rows(losses: list[float], cers: list[float] | None = None, wers: list[float] | None = None):
    cers = cers or [1.0] * len(losses)
    wers = wers or [1.0] * len(losses)
    return [
        {"epoch": k + 1, "loss": loss, "val_cer": cer, "val_wer": wer}
        for k, (loss, cer, wer) in enumerate(zip(losses, cers, wers))
    ]


def test_the_stalled_run_of_the_issue_is_stuck():
    """Loss flat near 21.7 from epoch 10 on, CER wandering 0.93-0.96 (below the old 0.95
    threshold at times), no captcha read: stuck, whatever the CER says."""
    losses = [53.0, 23.0, 22.5, 22.2, 22.0, 21.9, 21.85, 21.8, 21.75] + [21.7] * 46
    cers = [1.0] * 9 + [0.93 + 0.03 * ((k * 7) % 5) / 4 for k in range(46)]
    history = rows(losses, cers)
    assert min(r["val_cer"] for r in history) < 0.95
    assert is_stuck(history)
    assert not has_learned(history)


def test_a_run_that_learns_is_not_stuck_at_any_epoch():
    losses = [50.0, 22.8, 22.6, 22.5, 22.4, 22.0, 20.5, 17.0, 12.0, 8.0, 5.0, 3.0, 2.0, 1.5]
    wers = [1.0] * 8 + [0.99, 0.9, 0.6, 0.3, 0.15, 0.08]
    history = rows(losses, wers=wers)
    assert not any(is_stuck(history[:n]) for n in range(1, len(history) + 1))
    assert has_learned(history)


def test_a_falling_loss_is_never_stuck_even_before_any_captcha_is_read():
    history = rows([50.0, 22.0, 21.0, 20.0, 19.0, 18.0, 17.0, 16.0, 15.0])
    assert loss_still_falling(history)
    assert not is_stuck(history)


def test_too_few_epochs_to_judge():
    assert not is_stuck(rows([50.0, 22.0, 22.0, 22.0]))


def test_val_acc_column_wins_over_wer():
    history = [{"epoch": 1, "loss": 1.0, "val_wer": 1.0, "val_acc": 0.5}]
    assert has_learned(history)


@pytest.mark.parametrize(
    ("name", "stuck"),
    [("rkn_default_stalled.csv", True), ("rkn_learned.csv", False)],
)
def test_recorded_histories(name: str, stuck: bool):
    """Histories recorded from real trainings on rkn_securimage (see tests/histories/README)."""
    history = read(name)
    assert is_stuck(history) is stuck
