"""The comparison's runs: each (row, seed) is one training run (after MLM pre-training for a '+MLM' row), called
in-process one after another, or with `--parallel_runs N` in N spawned worker processes at once. A worker gets its
job as plain data and imports this module like any other (a GPU has room for several of these small models, whose
steps are too short to keep it busy alone; the scores are the same either way)."""

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..cli import LOG_FORMAT
from ..files import write_json
from ..training.classifier import train_classifier
from ..training.mlm import MLMArguments, pretrain_mlm
from .plan import ARGUMENT_CLASSES, Plan, per_run_arguments, row_label, run_max_length, truncation_note
from .resume import RUN_FILE, finished

logger = logging.getLogger(__name__)


def reset_accelerate() -> None:
    """Forget Accelerate's process-wide state, so that the next in-process run builds a fresh `Accelerator`."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def timed(function, *args) -> float:
    """Run `function(*args)` in-process, then reset Accelerate; returns the wall seconds it took."""
    started = time.perf_counter()
    try:
        function(*args)
    finally:
        reset_accelerate()
    return time.perf_counter() - started


def pretrain(compare_args, model_args, data_args, train_args, plan: Plan, preset: str, seed: int, folder: Path):
    """MLM pre-training of one preset and seed, on the same split, tokenizer and max_length as its fine-tuning
    runs."""
    max_length = run_max_length(plan, preset, model_args.max_length)
    mlm_model_args = dataclasses.replace(model_args, model_config=preset, init_from=None, max_length=max_length)
    training_args = TrainingArguments(
        output_dir=str(folder),
        max_steps=compare_args.pretrain_steps,
        learning_rate=compare_args.pretrain_learning_rate,
        warmup_steps=math.ceil(train_args.warmup_ratio * compare_args.pretrain_steps),
        weight_decay=train_args.weight_decay,
        per_device_train_batch_size=train_args.per_device_train_batch_size,
        per_device_eval_batch_size=train_args.per_device_eval_batch_size,
        logging_steps=max(1, compare_args.pretrain_steps // 20),
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=train_args.use_cpu,
        bf16=train_args.bf16,
        disable_tqdm=train_args.disable_tqdm,
        # The fine-tuning runs' batching, through the Trainer's own length grouping.
        train_sampling_strategy="group_by_length" if train_args.group_by_length else "random",
    )
    mlm_args = MLMArguments(
        mlm_probability=compare_args.mlm_probability,
        overwrite_output_dir=True,
        allow_slow_bf16=train_args.allow_slow_bf16,
    )
    pretrain_mlm(mlm_model_args, data_args, mlm_args, training_args)


def run_job(compare_args, model_args, data_args, train_args, plan: Plan, preset: str, seed: int, with_mlm: bool) -> str:
    """One row's run for one seed (MLM pre-training first for a '+MLM' row, unless done before); returns the
    line that reports its score."""
    label = row_label(plan, preset, with_mlm)
    run_dir = plan.output_dir / "runs" / label / f"seed-{seed}"
    init_from = None
    if with_mlm:
        init_from = plan.output_dir / "pretrain" / plan.labels[preset] / f"seed-{seed}"
        if not finished(init_from, "mlm_metrics.json"):
            logger.info(f"{label} seed {seed}: MLM pre-training for {compare_args.pretrain_steps} steps ...")
            seconds = timed(pretrain, compare_args, model_args, data_args, train_args, plan, preset, seed, init_from)
            write_json(init_from / RUN_FILE, {"wall_seconds": seconds})
    run_args = per_run_arguments(model_args, data_args, train_args, plan, preset, seed, init_from, run_dir)
    seconds = timed(train_classifier, *run_args)
    record = {"wall_seconds": seconds, "max_length": run_args[0].max_length}
    if truncation_note(plan, preset) is not None:
        record["max_length_note"] = truncation_note(plan, preset)
    write_json(run_dir / RUN_FILE, record)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = metrics[metrics["split"]]
    return f"{metrics['split']} accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f} ({seconds:.0f} s)"


def job_payload(compare_args, model_args, data_args, train_args, plan: Plan, job: tuple) -> dict:
    """A job as plain data, for a worker process (which rebuilds the arguments in `run_payload`)."""
    return {
        "arguments": [dataclasses.asdict(args) for args in (compare_args, model_args, data_args, train_args)],
        "plan": dataclasses.asdict(plan) | {"output_dir": str(plan.output_dir)},
        "job": list(job),
    }


def run_payload(payload: dict) -> str:
    """The entry of a worker process of --parallel_runs: `run_job` from `job_payload`'s plain data."""
    # The worker is the only process of its run; transformers' collators take any process not named so for a
    # DataLoader worker and refuse to seed their masking generator there.
    multiprocessing.current_process().name = "MainProcess"
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    compare_args, model_args, data_args, train_args = (
        cls(**values) for cls, values in zip(ARGUMENT_CLASSES, payload["arguments"], strict=True)
    )
    plan = Plan(**(payload["plan"] | {"output_dir": Path(payload["plan"]["output_dir"])}))
    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores shared among the runs at once
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // compare_args.parallel_runs))
    return run_job(compare_args, model_args, data_args, train_args, plan, *payload["job"])


def pending_jobs(plan: Plan) -> tuple[list[tuple], dict]:
    """Every (preset, seed, with_mlm) job in seed-major order, so that a stopped comparison has whole seeds, less
    those finished before (--resume); and each job's progress prefix."""
    jobs = [(preset, seed, False) for seed in plan.seeds for preset in plan.presets]
    jobs += [(preset, seed, True) for seed in plan.seeds for preset in plan.pretrain_presets]
    jobs.sort(key=lambda job: plan.seeds.index(job[1]))
    prefixes = {
        job: f"[{index}/{len(jobs)}] {row_label(plan, job[0], job[2])} seed {job[1]}"
        for index, job in enumerate(jobs, start=1)
    }
    todo = []
    for job in jobs:
        if finished(plan.output_dir / "runs" / row_label(plan, job[0], job[2]) / f"seed-{job[1]}", "metrics.json"):
            logger.info(f"{prefixes[job]}: finished before, kept")
        else:
            todo.append(job)
    return todo, prefixes


@contextlib.contextmanager
def workers_stop_with_this_process():
    """While inside: a SIGTERM to this process (`kill`, a scheduler's stop) also stops its worker processes, then
    exits. Without it the workers train on with no parent to collect their scores; Ctrl-C already reaches them, as
    the terminal signals the whole process group. A stopped run has no metrics.json, so --resume trains it again."""

    def stop(signum, frame):
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_models(compare_args, model_args, data_args, train_args, plan: Plan) -> None:
    """Every pending run: in this process one after another, or with --parallel_runs N in N worker processes
    (spawned: CUDA cannot be forked), taken in the same order."""
    arguments = (compare_args, model_args, data_args, train_args)
    todo, prefixes = pending_jobs(plan)
    if compare_args.parallel_runs == 1 or len(todo) < 2:
        for job in todo:
            logger.info(f"{prefixes[job]}: training ...")
            logger.info(f"{prefixes[job]}: {run_job(*arguments, plan, *job)}")
        return
    workers = min(compare_args.parallel_runs, len(todo))
    logger.info(f"{len(todo)} runs, {workers} at a time in worker processes")
    context = multiprocessing.get_context("spawn")
    with (
        workers_stop_with_this_process(),
        concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as executor,
    ):
        futures = {executor.submit(run_payload, job_payload(*arguments, plan, job)): job for job in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                logger.info(f"{prefixes[futures[future]]}: {future.result()}")
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)  # the runs in flight finish; none starts
            raise
