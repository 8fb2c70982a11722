"""The per-epoch verdict and the epoch budget: pure rules, checked without Keras or files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from captcha_ocr.config import AugmentConfig, TrainConfig
from captcha_ocr.epochs import (
    augments,
    cosine_learning_rate,
    epoch_budget,
    is_stuck_now,
    judge_epoch,
    patience_epochs,
)
from captcha_ocr.runfolder import HISTORY_COLUMNS, RunState, read_history, write_history
from tests.helpers import assert_runs_without


def _run(
    scores: list[tuple[float, float]],
    steps_per_epoch: int = 100,
    val_images: int = 0,
    val_chars: int = 0,
    **config: object,
) -> tuple[list, RunState]:
    """Judge epochs of (val_loss, val_cer) until a verdict stops; returns the verdicts."""
    settings = {"epochs": 1000, "patience": 3, "schedule": "cosine", **config}
    cfg = TrainConfig(**settings)  # type: ignore[arg-type]
    state, history, verdicts = RunState(), [], []
    for epoch, (loss, cer) in enumerate(scores, 1):
        # A model at CER ~1 reads no captcha right; at 0.5 it reads some.
        acc = 0.0 if cer >= 0.95 else 0.5
        history.append(
            {"epoch": epoch, "loss": loss, "val_loss": loss, "val_cer": cer, "val_acc": acc}
            | {"lr": 1e-3, "elapsed_s": epoch}
        )
        verdict = judge_epoch(state, history, cfg, steps_per_epoch, val_images, val_chars)
        verdicts.append(verdict)
        state = verdict.state
        if verdict.stop_reason:
            break
    return verdicts, state


def test_early_stopping_waits_while_ctc_is_on_the_blank_plateau() -> None:
    # 30 epochs at CER 1 with a rising validation loss (as on the plateau), then learning.
    scores = (
        [(10.0 + k, 1.0) for k in range(30)] + [(5.0, 0.5)] + [(6.0 + k, 0.5) for k in range(9)]
    )
    assert patience_epochs(3, 100) == 4  # 400 steps at least: 4 epochs of 100
    verdicts, state = _run(scores, steps_per_epoch=100, patience=3)
    assert len(verdicts) == 35  # 4 epochs after epoch 31
    assert "early stop" in state.stop_reason and state.record_epoch == 31


def test_patience_is_at_least_400_steps_on_small_sets() -> None:
    scores = [(1.0, 0.5)] + [(2.0, 0.5)] * 100
    assert patience_epochs(40, 5) == 80
    verdicts, _ = _run(scores, steps_per_epoch=5, patience=40)
    assert len(verdicts) == 81


def test_a_tie_moves_the_best_checkpoint_but_sets_no_record() -> None:
    verdicts, state = _run([(2.0, 0.5), (3.0, 0.5)], prefer_later=True)
    assert (verdicts[1].new_best, verdicts[1].new_record) == (True, False)
    assert (state.best_epoch, state.record_epoch) == (2, 1)
    verdicts, state = _run([(2.0, 0.5), (3.0, 0.5)], prefer_later=False)
    assert (verdicts[1].new_best, verdicts[1].new_record) == (False, False)
    assert state.best_epoch == 1
    verdicts, _ = _run([(2.0, 0.5), (1.0, 0.5)], prefer_later=False)
    assert (verdicts[1].new_best, verdicts[1].new_record) == (True, True)


def test_the_plateau_schedule_cuts_the_rate_after_its_patience() -> None:
    scores = [(1.0, 0.5)] + [(2.0, 0.5)] * 5
    verdicts, _ = _run(
        scores, schedule="plateau", plateau_patience=2, plateau_factor=0.5, patience=100
    )
    cuts = [v.learning_rate for v in verdicts]
    assert cuts == [None, None, 5e-4, None, 5e-4, None]
    verdicts, _ = _run(scores, schedule="cosine", plateau_patience=2, patience=100)
    assert all(v.learning_rate is None for v in verdicts)


def test_stop_reasons_budget_and_time_limit() -> None:
    verdicts, state = _run([(3.0 - k, 0.5) for k in range(3)], epochs=3)
    assert len(verdicts) == 3 and state.stop_reason == "epoch budget of 3 done"
    verdicts, state = _run([(3.0 - k, 0.5) for k in range(5)], time_limit=2.0)
    assert len(verdicts) == 2 and "time limit of 2 s" in state.stop_reason


def test_not_learning_is_said_after_a_fair_share_of_the_budget() -> None:
    # On the plateau: no captcha read, the loss all but flat (0.1 % an epoch).
    flat = [(10.0 - k * 0.01, 1.0) for k in range(12)]
    verdicts, _ = _run(flat, epochs=40, rescue=False)
    assert [v.state.stuck for v in verdicts].index(True) == 9  # epoch 10 = max(10, 40 // 4)
    assert not any(v.stop_reason for v in verdicts)  # without rescue it trains on


def test_a_stuck_run_stops_for_its_rescue() -> None:
    flat = [(10.0 - k * 0.01, 1.0) for k in range(30)]
    verdicts, state = _run(flat, epochs=80)
    assert len(verdicts) == 20  # 25 % of 80 epochs
    assert state.stuck and "blank plateau" in state.stop_reason


def test_a_falling_loss_is_not_stuck_even_at_cer_1() -> None:
    falling = [(10.0 * 0.97**k, 1.0) for k in range(30)]  # 3 % an epoch, nothing read yet
    verdicts, state = _run(falling, epochs=80)
    assert not any(v.state.stuck for v in verdicts) and not state.stuck


def test_a_run_that_never_reads_a_captcha_is_stuck_after_half_its_budget() -> None:
    # Memorising: the training loss falls fast, no validation captcha is ever read.
    memorising = [(10.0 * 0.9**k, 1.0) for k in range(60)]
    verdicts, state = _run(memorising, epochs=60)
    assert len(verdicts) == 30 and state.stuck
    learning = [(10.0 * 0.9**k, 1.0) for k in range(25)] + [(1.0, 0.5)] * 10
    verdicts, state = _run(learning, epochs=60)
    assert not state.stuck and "early stop" in state.stop_reason  # it learned at epoch 26


def test_augmentation_starts_once_captchas_are_read() -> None:
    waits = TrainConfig(augment=AugmentConfig(after_plateau=True))
    scores = [(10.0 - k * 0.5, 1.0) for k in range(5)] + [(4.0, 0.5), (3.0, 0.4)]
    verdicts, state = _run(scores, augment=AugmentConfig(after_plateau=True))
    assert [v.state.augment_from for v in verdicts] == [-1] * 5 + [6, 6]
    assert not augments(verdicts[4].state, waits, 5)
    assert augments(state, waits, 6)
    assert augments(RunState(), TrainConfig(), 0)  # the default: from the first epoch


def test_judging_does_not_change_the_state_it_was_given() -> None:
    state = RunState()
    row = {"epoch": 1, "loss": 1.0, "val_loss": 1.0, "val_cer": 0.5, "val_acc": 0.5}
    judge_epoch(state, [row | {"lr": 1e-3, "elapsed_s": 1.0}], TrainConfig(epochs=5), 10)
    assert state == RunState()


def test_history_has_val_acc_and_old_files_still_read(tmp_path: Path) -> None:
    assert "val_acc" in HISTORY_COLUMNS
    row = dict.fromkeys(HISTORY_COLUMNS, 0.25) | {"epoch": 1}
    write_history(tmp_path / "history.csv", [row])
    assert read_history(tmp_path / "history.csv") == [row]
    old = tmp_path / "old.csv"
    old.write_text("epoch,loss,val_loss,val_cer,val_wer,lr,elapsed_s\n1,2.0,3.0,0.1,0.25,0.001,4\n")
    (read,) = read_history(old)
    assert read["val_acc"] == pytest.approx(0.75) and read["epoch"] == 1


def test_state_written_with_the_old_counter_name_still_loads(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"epochs_done": 3, "improved_epoch": 2}')
    state = RunState.load(tmp_path)
    assert (state.epochs_done, state.record_epoch, state.best_cer) == (3, 2, math.inf)


def test_drawing_and_the_budget_rules_import_no_keras() -> None:
    code = (
        "import captcha_ocr.cli, captcha_ocr.epochs, captcha_ocr.runfolder, captcha_ocr.synth\n"
        "import captcha_ocr.progress, captcha_ocr.evaluate, captcha_ocr.feed\n"
    )
    assert_runs_without(("keras", "tensorflow"), code)


def test_doctests_of_the_keras_free_training_modules() -> None:
    import doctest

    from captcha_ocr import epochs, progress, runfolder

    for module in (epochs, progress, runfolder):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("name", "first_stuck_epoch"),
    [
        ("rkn_default_stalled.csv", 15),  # flat loss: stuck at a quarter of 60 epochs
        ("rkn_memorising.csv", 30),  # falling loss, nothing read: stuck at half
        ("rkn_learned.csv", None),  # left the plateau at epoch 12, read 16 % at epoch 16
    ],
)
def test_recorded_rkn_runs_are_judged_as_they_went(name: str, first_stuck_epoch) -> None:
    """Histories of real runs on rkn_securimage (60-epoch budgets), epoch by epoch."""
    history = read_history(Path(__file__).parent / "histories" / name)
    config = TrainConfig(epochs=60)
    verdicts = [is_stuck_now(history[:n], config) for n in range(1, len(history) + 1)]
    first = verdicts.index(True) + 1 if True in verdicts else None
    assert first == first_stuck_epoch


def _falling(epochs: int) -> list[tuple[float, float]]:
    """(val_loss, val_cer) of a run still learning: CER 0.9, 0.8, ... down to near 0."""
    return [(1.0, max(0.01, 0.9 * 0.8**k)) for k in range(epochs)]


def test_a_budget_that_ends_while_cer_still_falls_grows_by_half_once() -> None:
    verdicts, state = _run(_falling(40), epochs=10)
    assert [v.stop_reason for v in verdicts[:9]] == [""] * 9
    assert verdicts[9].stop_reason == "" and verdicts[9].state.epochs_fitted == 15
    assert len(verdicts) == 15 and state.epochs_extended == 5  # once: not again at 15
    assert state.stop_reason == (
        "epoch budget of 15 done (extended by 5: the validation CER was still falling)"
    )


def test_no_extension_when_flat_when_off_or_when_time_is_short() -> None:
    flat = [(1.0, 0.5 - 0.01 * k) for k in range(5)] + [(1.0, 0.45)] * 20
    verdicts, state = _run(flat, epochs=10)
    assert len(verdicts) == 10 and state.epochs_extended == 0  # 0.45 -> 0.45: not falling
    verdicts, state = _run(_falling(40), epochs=10, extend="none")
    assert len(verdicts) == 10 and state.stop_reason == "epoch budget of 10 done"
    # Epochs of 1 s (elapsed_s = epoch) against a limit of 12.5 s: 2 more epochs fit, not 5.
    verdicts, state = _run(_falling(40), epochs=10, time_limit=12.5)
    assert state.epochs_extended == 2 and len(verdicts) == 12


def test_a_run_still_on_the_plateau_is_not_extended() -> None:
    # CER falls from 1.0 to 0.96 but no captcha is read (val_acc 0): no extension.
    on_plateau = [(1.0, 1.0 - 0.005 * k) for k in range(10)]
    verdicts, state = _run(on_plateau, epochs=10, rescue=False)
    assert len(verdicts) == 10 and state.epochs_extended == 0


def test_the_recorded_late_learner_is_extended_and_the_default_runs_are_not() -> None:
    """rkn_learned.csv (random weights, 20 epochs, CER 0.67 -> 0.065 in its last five) gets
    ten more; a default run from the base model (flat at the end) gets none."""
    from captcha_ocr.epochs import extension, still_improving

    history = read_history(Path(__file__).parent / "histories" / "rkn_learned.csv")
    assert len(history) == 20 and still_improving(history)
    config = TrainConfig(epochs=20)
    assert extension(RunState(epochs_done=20), history, config) == 10
    assert extension(RunState(epochs_done=19), history[:19], config) == 0  # not at the end
    assert extension(RunState(epochs_done=20, epochs_extended=10), history, config) == 0
    flat = [dict(row, val_cer=0.002) for row in history]
    assert not still_improving(flat)


def _saturating(epochs: int, cer: float = 0.004) -> list[tuple[float, float]]:
    """(val_loss, val_cer) of a run that reads its validation images at epoch 2 and no more."""
    return [(1.0, 0.05)] + [(1.0, cer)] * (epochs - 1)


def test_a_saturated_validation_ends_the_budget_three_epochs_later() -> None:
    # Epoch 2 reaches 0.004; epochs 3-5 bring nothing lower: from epoch 5 the budget is 8.
    verdicts, state = _run(_saturating(20), val_images=300, epochs=20, patience=40)
    assert [v.state.epochs_fitted for v in verdicts[:5]] == [0, 0, 0, 0, 8]
    assert len(verdicts) == 8 and state.saturated_at == 5
    assert state.stop_reason == (
        "epoch budget of 8 done (shortened: the validation was saturated at epoch 5)"
    )
    # The cosine schedule follows the shorter budget: at its last step the rate is at the floor.
    config = TrainConfig(epochs=20)
    assert cosine_learning_rate(config, 8 * 100 - 1, 100, epoch_budget(state, config)) < (
        0.02 * config.learning_rate
    )


def test_no_shortening_on_few_images_above_the_cer_when_off_or_when_still_improving() -> None:
    for scores, val_images, config in (
        (_saturating(20), 100, {}),  # 100 validation images: a CER of 0.004 is one or two
        (_saturating(20, cer=0.01), 300, {}),  # rkn_securimage's level: not saturated
        (_saturating(20), 300, {"shorten": "none"}),
        ([(1.0, 0.005 * 0.8**k) for k in range(20)], 300, {}),  # a lower CER every epoch
    ):
        verdicts, state = _run(scores, val_images=val_images, epochs=20, patience=40, **config)
        assert len(verdicts) == 20 and state.saturated_at == 0
        assert state.stop_reason == "epoch budget of 20 done"


def test_a_shortened_run_is_not_extended_again() -> None:
    from captcha_ocr.epochs import extension

    history = read_history(Path(__file__).parent / "histories" / "rkn_learned.csv")
    config = TrainConfig(epochs=20)
    assert extension(RunState(epochs_done=20), history, config) == 10
    assert extension(RunState(epochs_done=20, saturated_at=17), history, config) == 0


@pytest.mark.parametrize(
    ("name", "saturated_epoch"),
    [
        ("amazon_3000.csv", 5),  # CER 0 at epoch 2, then 0.0006 for three epochs
        ("henan_3000.csv", 5),  # 0.0042 from epoch 2 to 20 (wrong labels in validation)
        ("rkn_learned.csv", None),  # still falling at 0.065
    ],
)
def test_recorded_runs_are_found_saturated_where_they_were(name: str, saturated_epoch) -> None:
    """Histories of real runs of 20 epochs on 300 validation images (3,000-image runs of the
    time bar) and on rkn_securimage."""
    from captcha_ocr.epochs import saturated

    history = read_history(Path(__file__).parent / "histories" / name)
    found = [n for n in range(1, len(history) + 1) if saturated(history[:n], 300)]
    assert (found[0] if found else None) == saturated_epoch


def _best_epochs(history: list[dict], val_chars: int, **config: object) -> list[int]:
    """The best checkpoint's epoch after each epoch of a recorded history."""
    cfg, state, best = TrainConfig(epochs=len(history), **config), RunState(), []
    for n in range(1, len(history) + 1):
        state = judge_epoch(state, history[:n], cfg, 100, 244, val_chars).state
        best.append(state.best_epoch)
    return best


def test_the_checkpoint_is_the_latest_epoch_within_the_noise_of_the_lowest_cer() -> None:
    """rkn_securimage, seed 2 (244 validation images, 1,464 characters): the lowest CER is
    epoch 8's 0.0082 (12 characters); one standard error is 3.5 characters, so the checkpoint
    moves on to the later epochs within 0.0106 and ends at epoch 20 (0.0102). Taken alone, the
    lowest CER kept epoch 8."""
    history = read_history(Path(__file__).parent / "histories" / "rkn_seed2.csv")
    best = _best_epochs(history, 1464)
    assert best[7] == 8 and best[11] == 11  # epoch 12 (0.0116) is more than the noise above
    assert best[-1] == 20
    assert _best_epochs(history, 0)[-1] == 8  # characters not known: the lowest CER
    assert _best_epochs(history, 1464, prefer_later=False)[-1] == 8


def test_at_a_cer_of_zero_the_checkpoint_moves_only_to_equal_epochs() -> None:
    scores = [(1.0, 0.02), (0.5, 0.0), (0.4, 0.0007), (0.3, 0.0)]
    verdicts, _ = _run(scores, val_images=300, val_chars=1500, patience=40, epochs=4)
    assert [v.new_best for v in verdicts] == [True, True, False, True]
