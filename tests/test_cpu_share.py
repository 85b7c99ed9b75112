"""How much of the CPU a run got: the training clock's CPU seconds, and the comparison's warning about runs that
shared their cores (under a time budget they did less work than their seconds say)."""

import time

from recurrent_transformer.experiments.report import Row
from recurrent_transformer.experiments.results import CONTENDED_SHARE, SLOW_SHARE, contention_note, speed_note
from recurrent_transformer.training.checkpoints import TrainClock


def busy(cpu_seconds: float) -> None:
    """Work until this process has used `cpu_seconds` more CPU time (however busy the machine is)."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_the_clock_counts_cpu_seconds_of_training_only():
    clock = TrainClock()
    clock.start()
    busy(0.2)
    with clock.paused():  # validation and checkpoints: neither clock runs
        busy(0.3)
    time.sleep(0.3)  # training time without CPU work, as when other processes hold the cores
    clock.stop()
    assert clock.seconds >= 0.2 + 0.3
    assert 0.2 <= clock.cpu_seconds < 0.2 + 0.1  # the busy 0.2 s; neither the pause's 0.3 s nor the sleep
    assert clock.elapsed_cpu() == clock.cpu_seconds


def test_a_clock_resumed_without_cpu_seconds_reports_none():
    clock = TrainClock(seconds=5.0, cpu_seconds=None)  # a checkpoint from before CPU time was counted
    clock.start()
    busy(0.05)
    assert clock.elapsed_cpu() is None
    clock.stop()
    assert clock.cpu_seconds is None and clock.seconds > 5.0


def row(label: str, shares: list[float | None]) -> Row:
    runs = [{"seed": 42 + index, "train_cpu_share": share} for index, share in enumerate(shares)]
    return Row(label, 1000, runs=runs)


def test_the_comparison_names_runs_that_shared_their_cores():
    rows = [row("lstm-baseline", [0.98, 0.55]), row("gla-rrl", [None, CONTENDED_SHARE - 0.01]), row("tf", [1.02])]
    note = contention_note(rows)
    assert "lstm-baseline seed 43 (55 %)" in note and "gla-rrl seed 43 (79 %)" in note
    assert "seed 42" not in note and "tf" not in note
    assert contention_note([row("lstm-baseline", [0.98, CONTENDED_SHARE]), row("svm", [None])]) is None
    assert "their time budget bought less work" in note
    # Under a step budget contention slows a run without changing its scores, and the note says so.
    steps_only = contention_note(rows, time_budget=False)
    assert "lstm-baseline seed 43 (55 %)" in steps_only and "their scores stand (the budget is in steps)" in steps_only
    assert "bought less work" not in steps_only


def test_the_comparison_names_runs_from_a_slower_machine():
    """A seed that trained at under SLOW_SHARE of its model's fastest tokens/s with its CPU to itself ran on a slower
    machine (a --resume in another session): named, unlike a few percent of spread or a run that shared its cores
    (contention_note names that one)."""

    def timed(label, runs):
        keys = ("train_tokens_per_second", "train_cpu_share")
        return Row(
            label, 1000, runs=[{"seed": 42 + i, **dict(zip(keys, run, strict=True))} for i, run in enumerate(runs)]
        )

    rows = [
        timed("lstm-rrrl-noffn", [(3445.0, 0.99), (3219.0, 0.98), (1490.0, 0.99)]),  # seed 44 on another machine
        timed("lstm-baseline", [(3805.0, 0.99), (1900.0, 0.55), (3834.0, None)]),  # seed 43 shared its cores
        timed("transformer-baseline", [(2172.0, 0.99), (SLOW_SHARE * 2172.0, 0.99)]),  # at the limit: not named
        timed("TF-IDF + LinearSVC", [(None, None)]),
    ]
    note = speed_note(rows)
    assert "lstm-rrrl-noffn seed 44 (1,490 against 3,445)" in note
    assert "seed 42" not in note and "seed 43" not in note and "transformer" not in note
    assert "their time budget bought less work" in note
    steps_only = speed_note(rows, time_budget=False)
    assert "their scores stand (the budget is in steps)" in steps_only and "bought less work" not in steps_only
    assert speed_note(rows[1:]) is None
