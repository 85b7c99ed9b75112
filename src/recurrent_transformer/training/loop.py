"""The Accelerate training loop of a sequence classifier, in small steps.

`prepare_run` builds the loaders, the model, AdamW and the schedule and hands them to `accelerator.prepare`;
`restore` continues a checkpoint; `run_loop` trains until `max_steps`, early stopping, the time budget or
`stop_after_step`, validating every `eval_steps` (or epoch) and keeping the best weights. The same loop runs in
one process on a CPU or in several (`accelerate launch`); every process computes, the main process writes.
"""

import itertools
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import LabelledData, make_collator, tokenize_splits
from ..files import write_json
from ..metrics import classification_metrics
from .build import BudgetSpent, build_model, build_optimizer, build_scheduler
from .checkpoints import (
    BEST_DIR,
    CHECKPOINT_DIR,
    CLOCK_FILE,
    HISTORY_FILE,
    LOSS_HISTORY_FILE,
    STATE_FILE,
    RandomState,
    TrainClock,
    TrainerState,
    checkpoints_in,
    history_until,
)
from .sampling import EpochLengthGroupedSampler, scoring_loader

logger = get_logger(__name__)  # logs on the main process only


@dataclass
class TrainingRun:
    """A run's prepared objects and its bookkeeping, shared by the loop's steps."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loaders: dict[str, DataLoader]
    train_args: object
    output_dir: Path
    label_names: list[str]
    max_steps: int
    num_epochs: int
    state: TrainerState = field(default_factory=TrainerState)
    clock: TrainClock = field(default_factory=TrainClock)
    history: list = field(default_factory=list)  # each validation, with its step and training seconds
    loss_history: list = field(default_factory=list)  # each logging window's mean training loss
    tokens_seen: torch.Tensor | None = None  # real tokens trained on by this process (main: plus earlier parts)
    positions_seen: torch.Tensor | None = None  # the same with padding: the padding share is 1 - tokens / positions
    running_loss: torch.Tensor | None = None
    running_batches: int = 0
    last_evaluated: int | None = None
    progress: object = None
    conversion: dict | None = None  # what a BERT-family init_from's conversion did (conversion.json)
    budget_spent: BudgetSpent | None = None  # with lr_schedule_by='seconds': what the schedule decays over

    @property
    def best_dir(self) -> Path:
        return self.output_dir / CHECKPOINT_DIR / BEST_DIR

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def make_loaders(tokenized, collator, train_args, num_processes: int = 1) -> dict[str, DataLoader]:
    """One loader per split: train shuffled (or length-grouped), the others longest first (`scoring_loader`)."""
    loaders = {
        name: scoring_loader(split, train_args.per_device_eval_batch_size, collator, train_args.dataloader_num_workers)
        for name, split in tokenized.items()
        if name != "train"
    }
    # A plain shuffle is a RandomSampler, which Accelerate makes seedable by (seed, epoch) in `prepare`.
    sampler = train_sampler(tokenized["train"], train_args, num_processes) if train_args.group_by_length else None
    train = DataLoader(
        tokenized["train"],
        batch_size=train_args.per_device_train_batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collator,
        num_workers=train_args.dataloader_num_workers,
    )
    return {"train": train, **loaders}


def train_sampler(train_split, train_args, num_processes: int) -> EpochLengthGroupedSampler:
    """The length-grouped order of `train_split`, grouped in global batches (see `training.sampling`)."""
    global_batch_size = train_args.per_device_train_batch_size * num_processes * train_args.gradient_accumulation_steps
    lengths = [len(ids) for ids in train_split["input_ids"]]
    return EpochLengthGroupedSampler(lengths, global_batch_size, train_args.seed)


def schedule_lengths(num_rows: int, train_args, num_processes: int) -> dict[str, int]:
    """Per-process micro-batches in an epoch once sharded (what prepare() yields on each process), the step budget,
    the epochs it spans and the warm-up steps."""
    batches_per_epoch = math.ceil(num_rows / (train_args.per_device_train_batch_size * num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / train_args.gradient_accumulation_steps)
    max_steps = train_args.max_steps
    if max_steps <= 0:
        max_steps = math.ceil(train_args.num_train_epochs * steps_per_epoch)
    return {
        "batches_per_epoch": batches_per_epoch,
        "max_steps": max_steps,
        "num_epochs": math.ceil(max_steps / steps_per_epoch),
        "warmup_steps": train_args.warmup_steps or math.ceil(train_args.warmup_ratio * max_steps),
    }


def prepare_run(model_args, train_args, accelerator: Accelerator, data: LabelledData, tokenizer, config, output_dir):
    """Loaders, model (seeded), optimizer and schedule, prepared by Accelerate."""
    tokenized = tokenize_splits(data.splits, tokenizer, model_args.max_length)
    loaders = make_loaders(tokenized, make_collator(tokenizer), train_args, accelerator.num_processes)
    set_seed(train_args.seed)  # before building the model: its initial weights follow the seed
    model, new_parameters, conversion = build_model(model_args, config)
    if train_args.activation_checkpointing:
        model.activation_checkpointing_enable(every_n_layers=train_args.checkpoint_every_n_layers)
    optimizer = build_optimizer(
        model,
        train_args.learning_rate,
        train_args.weight_decay,
        (train_args.adam_beta1, train_args.adam_beta2),
        train_args.adam_epsilon,
        new_parameters=new_parameters,
        new_learning_rate=train_args.new_layers_learning_rate,
    )
    lengths = schedule_lengths(len(tokenized["train"]), train_args, accelerator.num_processes)
    spent = BudgetSpent(train_args.max_train_seconds) if train_args.lr_schedule_by == "seconds" else None
    scheduler = build_scheduler(
        optimizer,
        train_args.lr_scheduler_type,
        lengths["warmup_steps"],
        lengths["max_steps"],
        accelerator.num_processes,
        frozen_steps=train_args.freeze_pretrained_steps,
        spent=spent,
    )
    names = list(loaders)
    prepared = accelerator.prepare(model, optimizer, scheduler, *loaders.values())
    loaders = dict(zip(names, prepared[3:], strict=True))
    if len(loaders["train"]) != lengths["batches_per_epoch"]:
        raise RuntimeError(f"expected {lengths['batches_per_epoch']} batches per epoch, got {len(loaders['train'])}")
    return TrainingRun(
        accelerator, *prepared[:3], loaders, train_args, Path(output_dir), data.label_names,
        lengths["max_steps"], lengths["num_epochs"],
        tokens_seen=torch.zeros((), dtype=torch.long, device=accelerator.device),
        positions_seen=torch.zeros((), dtype=torch.long, device=accelerator.device),
        running_loss=torch.zeros((), device=accelerator.device),
        conversion=conversion,
        budget_spent=spent,
    )  # fmt: skip


def restore(run: TrainingRun, checkpoint: Path) -> None:
    """Model, optimizer, schedule and RNG states from a checkpoint; where the loop stood, its clock and histories."""
    run.accelerator.load_state(str(checkpoint))
    run.state = TrainerState.load(checkpoint / STATE_FILE)
    if (checkpoint / CLOCK_FILE).is_file():
        saved = json.loads((checkpoint / CLOCK_FILE).read_text())
        run.clock.seconds = saved["train_seconds"]
        run.clock.cpu_seconds = saved.get("train_cpu_seconds")  # None: a checkpoint from before CPU time was counted
        if run.budget_spent is not None:
            run.budget_spent.seconds = run.clock.seconds
        if run.is_main:
            run.tokens_seen += saved["train_tokens"]
            # A checkpoint written before positions were counted: its part counts as unpadded.
            run.positions_seen += saved.get("train_positions", saved["train_tokens"])
    run.history = history_until(run.output_dir / HISTORY_FILE, run.state.global_step)
    run.loss_history = history_until(run.output_dir / LOSS_HISTORY_FILE, run.state.global_step)
    logger.info(f"resumed from {checkpoint} at step {run.state.global_step}")


def init_trackers(run: TrainingRun, argument_groups) -> None:
    if run.train_args.report_to == "none":
        return
    # TensorBoard's hparams take scalars only.
    hparams = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for args in argument_groups
        for key, value in asdict(args).items()
    }
    run.accelerator.init_trackers("train", config=hparams)


def save_model(run: TrainingRun, folder: Path) -> None:
    """`save_pretrained` on the main process; every process joins in, as FSDP and DeepSpeed gather the weights."""
    state_dict = run.accelerator.get_state_dict(run.model)
    run.accelerator.unwrap_model(run.model).save_pretrained(
        folder, is_main_process=run.is_main, state_dict=state_dict, save_function=run.accelerator.save
    )
    run.accelerator.wait_for_everyone()


def predict(model, dataloader, accelerator: Accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted and true label ids over the whole split (all processes, duplicates dropped), and the mean loss."""
    model.eval()
    predictions, references, losses = [], [], []
    for batch in dataloader:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
        gathered = accelerator.gather_for_metrics((logits.argmax(dim=-1), batch["labels"], loss))
        for store, tensor in zip((predictions, references, losses), gathered, strict=True):
            store.append(tensor.cpu())
    model.train()
    return torch.cat(predictions).numpy(), torch.cat(references).numpy(), torch.cat(losses).mean().item()


def validate(run: TrainingRun) -> bool:
    """Score the validation split, keep the best weights, record the scores; True when early stopping says stop.
    The training clock is paused meanwhile."""
    args, state = run.train_args, run.state
    with run.clock.paused():
        predictions, references, loss = predict(run.model, run.loaders["validation"], run.accelerator)
        scores = classification_metrics(
            predictions, references, run.label_names, backend=args.metrics_backend, per_class=False
        )
        scores["loss"] = loss
        metric = scores[args.metric_for_best_model]
        if state.best_metric is None or metric > state.best_metric:
            state.best_metric, state.best_step, state.evaluations_without_gain = metric, state.global_step, 0
            save_model(run, run.best_dir)
        else:
            state.evaluations_without_gain += 1
        state.log_history.append({"step": state.global_step, **scores})
        run.history.append({"step": state.global_step, "train_seconds": run.clock.elapsed(), **scores})
        if run.is_main:  # rewritten at each validation, so it can be watched during the run
            write_json(run.output_dir / HISTORY_FILE, run.history)
        headline = {f"eval/{key}": value for key, value in scores.items() if isinstance(value, int | float)}
        run.accelerator.log(headline, step=state.global_step)
        logger.info(f"step {state.global_step}: validation {args.metric_for_best_model}={metric:.4f}")
    run.last_evaluated = state.global_step
    patience = args.early_stopping_patience
    return patience > 0 and state.evaluations_without_gain >= patience


def save_checkpoint(run: TrainingRun) -> None:
    """Accelerate's state with where the loop stands and the clock; only the newest `save_total_limit` are kept."""
    with run.clock.paused():
        path = run.output_dir / CHECKPOINT_DIR / f"step-{run.state.global_step:07d}"
        run.accelerator.save_state(str(path))
        total_tokens = run.accelerator.reduce(run.tokens_seen, reduction="sum").item()
        total_positions = run.accelerator.reduce(run.positions_seen, reduction="sum").item()
        if run.is_main:
            run.state.save(path / STATE_FILE)
            clock = {
                "train_seconds": run.clock.elapsed(),
                "train_cpu_seconds": run.clock.elapsed_cpu(),
                "train_tokens": total_tokens,
            }
            write_json(path / CLOCK_FILE, clock | {"train_positions": total_positions})
            kept = checkpoints_in(run.output_dir)
            limit = run.train_args.save_total_limit
            for old in kept[: max(len(kept) - limit, 0)] if limit else []:
                shutil.rmtree(old)
        run.accelerator.wait_for_everyone()


def out_of_time(run: TrainingRun) -> bool:
    """The time budget is spent on some process (all of them stop together). The most seconds any process counted
    also set what a schedule over seconds has spent, the same on every process."""
    budget = run.train_args.max_train_seconds
    if budget <= 0:
        return False
    elapsed = torch.tensor([run.clock.elapsed()], device=run.accelerator.device)
    most = run.accelerator.gather(elapsed).max().item()
    if run.budget_spent is not None:
        run.budget_spent.seconds = most
    return most >= budget


def epoch_batches(run: TrainingRun, epoch: int):
    """The training batches of `epoch`, after those a resumed run already consumed."""
    loader = run.loaders["train"]
    loader.set_epoch(epoch)
    skip = run.state.batches_in_epoch if epoch == run.state.epoch else 0
    if skip:
        # The loader draws from the torch RNG when its first batch is asked for; the interrupted run made that
        # draw before its checkpoint, so the resumed run steps around it (restoring the saved state).
        random_state = RandomState()
        batches = iter(run.accelerator.skip_first_batches(loader, skip))
        first = next(batches, None)
        random_state.restore()
        batches = itertools.chain([first] if first is not None else [], batches)
    else:
        batches = iter(loader)
    run.state.epoch, run.state.batches_in_epoch = epoch, skip
    return batches


def train_on(run: TrainingRun, batch: dict) -> bool:
    """Forward and backward on one micro-batch; True when it completed an optimizer step."""
    accelerator = run.accelerator
    run.tokens_seen += batch["attention_mask"].sum()
    run.positions_seen += batch["attention_mask"].numel()
    with accelerator.accumulate(run.model):
        loss = run.model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and run.train_args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.model.parameters(), run.train_args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    run.state.batches_in_epoch += 1
    run.running_loss += loss.detach().float()
    run.running_batches += 1
    return accelerator.sync_gradients


def log_training_loss(run: TrainingRun, epoch: int) -> None:
    """The mean loss since the last log: to the trackers, the progress bar and loss_history.json."""
    step = run.state.global_step
    mean_loss = run.accelerator.reduce(run.running_loss, reduction="mean").item() / run.running_batches
    learning_rate = run.scheduler.get_last_lr()[0]
    run.accelerator.log(
        {"train/loss": mean_loss, "train/learning_rate": learning_rate, "train/epoch": epoch}, step=step
    )
    run.loss_history.append(
        {"step": step, "loss": mean_loss, "learning_rate": learning_rate, "train_seconds": run.clock.elapsed()}
    )
    if run.is_main:
        write_json(run.output_dir / LOSS_HISTORY_FILE, run.loss_history)
    run.progress.set_postfix(loss=f"{mean_loss:.4f}")
    run.running_loss.zero_()
    run.running_batches = 0


def after_optimizer_step(run: TrainingRun, epoch: int) -> str | None:
    """Count the step, then log, validate and checkpoint as scheduled; returns why training stops here
    ('max_steps', 'early_stopping', 'max_train_seconds', 'stop_after_step'), or None to go on."""
    args, state = run.train_args, run.state
    state.global_step += 1
    run.progress.update(1)
    if state.batches_in_epoch == len(run.loaders["train"]):
        state.epoch, state.batches_in_epoch = epoch + 1, 0
    step = state.global_step
    if step % args.logging_steps == 0 or step == run.max_steps:
        log_training_loss(run, epoch)
    evaluate_now = step % args.eval_steps == 0 if args.eval_steps > 0 else state.batches_in_epoch == 0
    timed_out = out_of_time(run)
    reason = None
    if (evaluate_now or step == run.max_steps or timed_out) and validate(run):
        reason = "early_stopping"
    if timed_out:
        reason = "max_train_seconds"
        logger.info(f"time budget of {args.max_train_seconds} s spent at step {step}")
    save_now = step % args.save_steps == 0 if args.save_steps > 0 else evaluate_now
    if save_now or step == args.stop_after_step:
        save_checkpoint(run)
    if step == args.stop_after_step:
        return "stop_after_step"
    if reason is None and step >= run.max_steps:
        reason = "max_steps"
    return reason


def run_loop(run: TrainingRun) -> str:
    """Train from where the run stands; returns why it stopped (see `after_optimizer_step`). Unless it stopped by
    `stop_after_step`, the last step is validated before returning."""
    run.progress = tqdm(
        total=run.max_steps,
        initial=run.state.global_step,
        desc="training",
        disable=run.train_args.disable_tqdm or not run.accelerator.is_local_main_process,
    )
    run.last_evaluated = run.state.log_history[-1]["step"] if run.state.log_history else None
    run.model.train()
    run.clock.start()
    reason = "max_steps"
    for epoch in range(run.state.epoch, run.num_epochs):
        if run.state.global_step >= run.max_steps:
            break
        stopped = None
        for batch in epoch_batches(run, epoch):
            if train_on(run, batch):
                stopped = after_optimizer_step(run, epoch)
                if stopped is not None:
                    break
        if stopped is not None:
            reason = stopped
            break
    run.progress.close()
    if reason == "stop_after_step":
        logger.info(f"stopped after step {run.state.global_step} (stop_after_step); continue with --resume")
        return reason
    run.clock.stop()
    if run.last_evaluated != run.state.global_step:
        validate(run)
    return reason
