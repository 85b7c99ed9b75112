"""`recurrent-transformer benchmark` (or `python scripts/benchmark.py`): CPU throughput and training memory of the model
presets, against transformers' BERT (or Llama) of equal shape.

For each preset, our model and a reference of equal hidden size, layers, heads, feed-forward width and dropout are
built side by side and timed interleaved in one process: warm-up steps first, then `--rounds` rounds in which each
model runs `--steps` steps (the order alternates from round to round); a throughput is the median over rounds.

    recurrent-transformer benchmark                                  # every preset but tiny, batch 32 x 128, fp32
    recurrent-transformer benchmark --presets hybrid-small lstm-baseline --rounds 7
    recurrent-transformer benchmark --bf16                           # torch.autocast(cpu, bfloat16) for both models
    recurrent-transformer benchmark --compile                        # adds torch.compile(our model) and its speed-up
    recurrent-transformer benchmark --activation_checkpointing       # our model recomputes activations in backward
    recurrent-transformer benchmark --activation_checkpointing --checkpoint_every_n_layers 2   # in half its layers
    recurrent-transformer benchmark --causal                         # bidirectional=False ForCausalLM vs LlamaForCausalLM
    recurrent-transformer benchmark --threads 2 --output runs/benchmark   # writes runs/benchmark.md and .json
    recurrent-transformer benchmark --generation --threads 1         # batch-1 greedy decoding latency vs Llama
    recurrent-transformer benchmark --presets mingru-hybrid --profile    # + where a training step's time goes
    recurrent-transformer benchmark --presets tiny hybrid-small --seq_lens 128 512 2048 8192 --tokens_per_batch 8192 \
        --threads 1 2 --output runs/bench/lengths           # one row per preset, length and thread count

Default task: sequence classification with `--num_labels` 8 against `BertForSequenceClassification` (gelu,
`hidden_dropout_prob` and `attention_probs_dropout_prob` from the preset). `--causal` instead benchmarks each
preset with `bidirectional=False` as `RecurrentTransformerForCausalLM` against `LlamaForCausalLM` (Llama's own gated
SiLU MLP of the same intermediate size, no hidden dropout, tied embeddings like ours), language-model loss on the
input ids. A preset without a feed-forward sub-layer (`intermediate_size` 0) is compared with a reference whose
feed-forward is 4 x hidden_size (for lstm-baseline: hybrid-small's shape); the `reference` column says so.

- training step: forward + loss + backward + AdamW step + zero_grad, in train mode (dropout on);
- inference: forward under `torch.inference_mode()` in eval mode (full sequence, no cache);
- ratio: our tokens/s divided by the reference's tokens/s (above 1: ours is faster);
- train peak MiB: peak live tensor memory of one steady-state training step = parameters + AdamW state (counted
  from the tensors) + the step's peak of activations, gradients and temporaries, read from torch.profiler's CPU
  allocator events (`profile_memory=True`). It leaves out the Python/torch runtime and any workspace oneDNN/MKL
  allocate outside torch's allocator, so it compares models rather than predicting process RSS.

`--generation` measures what a user of `generate()` waits for, at batch 1 with greedy search: for each context in
`--contexts` a random prompt of that length is generated from for `--new_tokens` tokens, our model (the preset
with `bidirectional=False`, default presets: the recurrence-only `lstm-baseline` and the sliding-window hybrid
`hybrid-sliding`) against a `LlamaForCausalLM` of the same hidden size, layers and heads whose feed-forward width
is chosen so that both have the same number of parameters (within one 64-wide step). A logits processor stamps the
time at which each new token's scores arrive: prefill = start of `generate()` to the first stamp (the prompt's
forward pass with its cache), ms/token = median gap between consecutive stamps (one decoding step through the
cache plus generate's own per-token work). Medians over interleaved rounds; growth = ms/token at the longest
context / at the shortest.

`--seq_lens` sweeps lengths and `--threads` thread counts: each preset's two models are built once (positions for
the longest length) and measured at every length and thread count, one row each in one table, with the columns
`seq len`, `batch size` and `threads` after the preset. `--tokens_per_batch` keeps the tokens per step equal across
lengths (batch = tokens_per_batch // length), so the rows show how the cost per token grows with length (attention
grows with it, a recurrence does not). A point that fails (say, memory at 8192) is an n/a row; the others still run.
Without these flags the table is the single-length one.

`--profile` runs torch.profiler over `--steps` more training steps of our model (at every length and thread count)
and adds two columns: `scan %`, the share of the step's CPU time spent in the parallel scan of a minGRU cell
(the `MinGRUScan` node, forward and backward: the scan with its element-wise gates; or `linear_scan` and its node
in local windows), n/a for presets without one; and `recurrence %`, the share spent in
the recurrent sub-layers (`RecurrentMixer`: its forward, labelled with `record_function`, and the backward nodes of
the ops it ran), n/a for presets without recurrence. The top operators by self CPU time go to the log and, with
`--output`, to <output>-profile.txt.

Timings are only comparable within one run: the models share the process, the threads and the machine's load
(the footnote gives the load average). A preset that fails (e.g. `--bf16` on a CPU without native bf16, where
torch's oneDNN LSTM kernel refuses autocast) gets a row of n/a naming the error instead of stopping the run.
"""

import copy
import gc
import itertools
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from torch.profiler import ProfilerActivity, profile
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
)

from . import modeling_recurrent_transformer as modeling
from .cli import parse_arguments, run_command
from .files import write_json
from .machine import cpu_model, load
from .modeling_recurrent_transformer import (
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForSequenceClassification,
)
from .presets import available_presets, load_preset

logger = logging.getLogger(__name__)

# A preset without a feed-forward sub-layer (intermediate_size 0) is compared with a reference whose feed-forward
# is this many times hidden_size; for lstm-baseline that is hybrid-small's shape, which the note then names.
FALLBACK_FEED_FORWARD_RATIO = 4
FALLBACK_SHAPE_PRESET = "hybrid-small"
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
MIB = 2**20
# Table columns, in order; the JSON rows carry the same keys plus the per-round numbers.
COLUMNS = [
    "preset",
    "params",
    "ref_params",
    "train_tokens_per_s",
    "ref_train_tokens_per_s",
    "train_ratio",
    "infer_tokens_per_s",
    "ref_infer_tokens_per_s",
    "infer_ratio",
    "train_peak_mib",
    "ref_train_peak_mib",
    "reference",
]
# --generation: the recurrence-only baseline and the sliding-window hybrid, whose per-token cost should not grow.
GENERATION_PRESETS = ["lstm-baseline", "hybrid-sliding"]
FEED_FORWARD_STEP = 64  # the parameter-matched Llama's intermediate_size is a multiple of this
PROFILE_COLUMNS = ["scan_percent", "recurrence_percent"]
# The minGRU scan: the whole-sequence path's fused node (forward and backward: the scan with its element-wise gates),
# and `linear_scan` (labelled here) with its node, which local windows use.
SCAN_EVENTS = ("MinGRUScan", "MinGRUScanBackward", "linear_scan", "LinearScanBackward")
RECURRENCE_EVENT = "recurrent_mixer"  # a recurrent sub-layer's forward, labelled here
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "  # the profiler's event for one backward node
SWEEP_COLUMNS = ["seq_len", "batch_size", "threads"]  # after "preset" when lengths or thread counts are swept
PROFILE_NOTE = (
    " scan %: share of a training step's CPU time in minGRU's parallel scan; recurrence %: in the recurrent "
    "sub-layers (forward and backward, the scan included); n/a: the preset has none."
)
PROFILE_ROWS = 15  # operators listed per preset
COMPILE_COLUMNS = ["compiled_train_tokens_per_s", "compile_train_speedup", "compiled_infer_tokens_per_s",
                   "compile_infer_speedup"]  # fmt: skip


@dataclass
class BenchmarkArguments:
    presets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Preset names or JSON config files (default: every shipped preset but tiny; with "
            f"--generation: {' '.join(GENERATION_PRESETS)})."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Sequences per step (see --tokens_per_batch)."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per sequence (no padding); see --seq_lens."})
    seq_lens: list[int] | None = field(
        default=None,
        metadata={
            "help": "Sequence lengths to sweep, e.g. 128 512 2048 8192: one table row per preset, length and thread "
            "count (the models are built once per preset, with positions for the longest). Unset: --seq_len alone."
        },
    )
    tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per step at every length: batch = tokens_per_batch // length (so 8192 gives 64 x 128 and "
            "1 x 8192). Unset: --batch_size at every length."
        },
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary of both models (overrides the preset's)."})
    num_labels: int = field(default=8, metadata={"help": "Classes of the sequence-classification head."})
    rounds: int = field(default=5, metadata={"help": "Timed rounds; each throughput is the median over rounds."})
    steps: int = field(default=3, metadata={"help": "Steps each model runs per round."})
    warmup: int = field(default=2, metadata={"help": "Untimed steps per model before each phase (and compile)."})
    threads: list[int] | None = field(
        default=None,
        metadata={"help": "torch.set_num_threads values, e.g. 1 2 (one row each); default: the usable CPU cores."},
    )
    bf16: bool = field(default=False, metadata={"help": "Run forward and loss under torch.autocast(cpu, bfloat16)."})
    compile: bool = field(default=False, metadata={"help": "Also time torch.compile(our model); report speed-up."})
    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Train our model with activation checkpointing (each layer's activations recomputed in the "
            "backward pass: less memory, more time); the reference trains without."
        },
    )
    checkpoint_every_n_layers: int = field(
        default=1,
        metadata={"help": "With --activation_checkpointing: recompute only every n-th layer of ours."},
    )
    profile: bool = field(
        default=False, metadata={"help": "Profile our training step: the minGRU scan's share and the top operators."}
    )
    causal: bool = field(default=False, metadata={"help": "Causal LM (bidirectional=False) vs LlamaForCausalLM."})
    generation: bool = field(
        default=False, metadata={"help": "Batch-1 greedy generate() latency per token and prefill vs Llama."}
    )
    contexts: list[int] = field(
        default_factory=lambda: [128, 1024, 4096], metadata={"help": "Prompt lengths for --generation."}
    )
    new_tokens: int = field(default=32, metadata={"help": "Tokens generated per prompt with --generation."})
    output: str | None = field(default=None, metadata={"help": "Write the table to <output>.md and <output>.json."})
    seed: int = field(default=0, metadata={"help": "Seed for weights and the random batch."})

    def __post_init__(self):
        for name in (
            "batch_size",
            "seq_len",
            "vocab_size",
            "num_labels",
            "rounds",
            "steps",
            "new_tokens",
            "checkpoint_every_n_layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be a positive integer")
        if self.warmup < 0:
            raise ValueError(f"--warmup={self.warmup} must be >= 0")
        for name in ("seq_lens", "threads"):
            values = getattr(self, name)
            if values is not None and (not values or min(values) < 1 or len(set(values)) < len(values)):
                raise ValueError(f"--{name}={values} must be distinct positive integers")
        if self.tokens_per_batch is not None and self.tokens_per_batch < max(sequence_lengths(self)):
            raise ValueError(
                f"--tokens_per_batch={self.tokens_per_batch} must be at least the longest length "
                f"({max(sequence_lengths(self))}): every step holds the same number of tokens"
            )
        if self.generation and (self.seq_lens is not None or len(self.threads or []) > 1):
            raise ValueError(
                "--seq_lens and several --threads sweep training and inference; --generation uses --contexts"
            )
        if not self.contexts or min(self.contexts) < 1:
            raise ValueError(f"--contexts={self.contexts} must be positive prompt lengths")
        if self.checkpoint_every_n_layers != 1 and not self.activation_checkpointing:
            raise ValueError("--checkpoint_every_n_layers says which layers --activation_checkpointing recomputes")
        if self.new_tokens < 2 and self.generation:
            raise ValueError("--new_tokens must be at least 2: a per-token time is the gap between two tokens")


@dataclass
class Contender:
    """One model being timed, with its optimizer."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    bf16: bool
    causal: bool


def sequence_lengths(args: BenchmarkArguments) -> list[int]:
    return args.seq_lens or [args.seq_len]


def batch_size_at(args: BenchmarkArguments, seq_len: int) -> int:
    """Sequences per step at `seq_len`: --tokens_per_batch // seq_len, or --batch_size."""
    return args.batch_size if args.tokens_per_batch is None else args.tokens_per_batch // seq_len


def is_sweep(args: BenchmarkArguments) -> bool:
    """Whether the table has a row per length and thread count (and the columns that say which)."""
    return args.seq_lens is not None or len(args.threads) > 1


def parse_args(argv: list[str]) -> BenchmarkArguments:
    (args,) = parse_arguments((BenchmarkArguments,), argv)
    if args.threads is None:
        args.threads = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()]
    if args.presets is None:
        args.presets = GENERATION_PRESETS if args.generation else [n for n in available_presets() if n != "tiny"]
    return args


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def build_ours(preset: str, args: BenchmarkArguments) -> torch.nn.Module:
    overrides = {"vocab_size": args.vocab_size, "max_position_embeddings": max(512, *sequence_lengths(args))}
    if args.causal:
        config = load_preset(preset, bidirectional=False, **overrides)
        config._attn_implementation = "sdpa"
        return RecurrentTransformerForCausalLM(config)
    config = load_preset(preset, num_labels=args.num_labels, **overrides)
    config._attn_implementation = "sdpa"
    return RecurrentTransformerForSequenceClassification(config)


def reference_shape(config) -> tuple[dict, str]:
    """Hidden size, layers, heads, feed-forward width and dropout of the reference, and a note when they differ."""
    shape = {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_dropout": config.attention_dropout,
    }
    if config.intermediate_size:
        return shape, ""
    # BERT and Llama always have a feed-forward sub-layer: give it the usual width.
    shape["intermediate_size"] = FALLBACK_FEED_FORWARD_RATIO * config.hidden_size
    note = f"; preset has no feed-forward, reference FF = {FALLBACK_FEED_FORWARD_RATIO} x hidden"
    if FALLBACK_SHAPE_PRESET in available_presets():
        fallback = load_preset(FALLBACK_SHAPE_PRESET)
        if all(shape[name] == getattr(fallback, name) for name in SHAPE_FIELDS):
            note += f" ({FALLBACK_SHAPE_PRESET}'s shape)"
    return shape, note


def build_reference(config, args: BenchmarkArguments) -> tuple[torch.nn.Module, str]:
    """BertForSequenceClassification (or LlamaForCausalLM with --causal) of the preset's shape, and its label."""
    shape, note = reference_shape(config)
    common = {
        "vocab_size": args.vocab_size,
        "hidden_size": shape["hidden_size"],
        "num_hidden_layers": shape["num_hidden_layers"],
        "num_attention_heads": shape["num_attention_heads"],
        "intermediate_size": shape["intermediate_size"],
        "max_position_embeddings": max(512, *sequence_lengths(args)),
        "pad_token_id": 0,
    }
    if args.causal:
        reference_config = llama_config(common, attention_dropout=shape["attention_dropout"])
        model_class = LlamaForCausalLM
    else:
        reference_config = BertConfig(
            **common,
            hidden_act="gelu",
            hidden_dropout_prob=shape["hidden_dropout_prob"],
            attention_probs_dropout_prob=shape["attention_dropout"],
            num_labels=args.num_labels,
        )
        model_class = BertForSequenceClassification
    reference_config._attn_implementation = "sdpa"
    label = (
        f"{model_class.__name__.removesuffix('ForSequenceClassification').removesuffix('ForCausalLM')} "
        f"L{shape['num_hidden_layers']} H{shape['hidden_size']} A{shape['num_attention_heads']} "
        f"FF{shape['intermediate_size']}{note}"
    )
    return model_class(reference_config), label


def llama_config(common: dict, attention_dropout: float = 0.0) -> LlamaConfig:
    """A Llama config from the shared shape keys: one key/value head per head, tied embeddings like ours, sdpa."""
    config = LlamaConfig(
        **common,
        num_key_value_heads=common["num_attention_heads"],
        attention_dropout=attention_dropout,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return config


def make_contender(name: str, model: torch.nn.Module, args: BenchmarkArguments) -> Contender:
    return Contender(name, model, torch.optim.AdamW(model.parameters(), lr=1e-4), args.bf16, args.causal)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())  # tied weights are listed once


def make_batch(args: BenchmarkArguments, seq_len: int) -> dict[str, torch.Tensor]:
    """Random token ids (no pad id, all-ones mask); class labels, or the ids themselves for a causal LM."""
    generator = torch.Generator().manual_seed(args.seed)
    batch_size = batch_size_at(args, seq_len)
    input_ids = torch.randint(1, args.vocab_size, (batch_size, seq_len), generator=generator)
    if args.causal:
        labels = input_ids.clone()
    else:
        labels = torch.randint(0, args.num_labels, (batch_size,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


# ---------------------------------------------------------------------------------------------------------------
# Steps and timing
# ---------------------------------------------------------------------------------------------------------------


def forward_kwargs(contender: Contender, batch: dict) -> dict:
    # Causal models run the full sequence without building a cache (an encoder has none).
    return {**batch, "use_cache": False} if contender.causal else batch


def train_step(contender: Contender, batch: dict) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=contender.bf16):
        loss = contender.model(**forward_kwargs(contender, batch)).loss
    loss.backward()
    contender.optimizer.step()
    contender.optimizer.zero_grad()


def infer_step(contender: Contender, batch: dict) -> None:
    inputs = {key: value for key, value in forward_kwargs(contender, batch).items() if key != "labels"}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=contender.bf16):
        contender.model(**inputs)


def timed(step: Callable, contender: Contender, batch: dict, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(contender, batch)
    return time.perf_counter() - start


def measure_throughput(
    contenders: list[Contender], step: Callable, batch: dict, args: BenchmarkArguments
) -> dict[str, list[float]]:
    """Tokens/s of each contender in each round: warm-up first, then rounds in alternating order."""
    training = step is train_step
    for contender in contenders:
        contender.model.train(training)
        timed(step, contender, batch, args.warmup)
    tokens = batch["input_ids"].numel() * args.steps
    per_round = {contender.name: [] for contender in contenders}
    for round_idx in range(args.rounds):
        order = contenders if round_idx % 2 == 0 else contenders[::-1]
        for contender in order:
            per_round[contender.name].append(tokens / timed(step, contender, batch, args.steps))
    return per_round


def peak_train_memory(contender: Contender, batch: dict) -> dict[str, float]:
    """MiB of parameters + optimizer state, and the peak of tensors allocated during one training step.

    Run after warm-up, so AdamW's state exists and the gradients are None at the start (zero_grad sets them to
    None): the step's peak is activations + gradients + temporaries. Allocations come from torch.profiler's
    `[memory]` events (signed sizes in time order); blocks freed during the step that were allocated before it
    are not reported by the profiler, which can only overstate the peak slightly.
    """
    contender.model.train()
    gc.collect()
    static_bytes = sum(parameter.numel() * parameter.element_size() for parameter in contender.model.parameters())
    for state in contender.optimizer.state.values():
        static_bytes += sum(value.numel() * value.element_size() for value in state.values() if torch.is_tensor(value))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        train_step(contender, batch)
    events = [event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return {"static_mib": static_bytes / MIB, "step_peak_mib": peak / MIB, "total_mib": (static_bytes + peak) / MIB}


def profile_training(contender: Contender, batch: dict, steps: int) -> tuple[float | None, float | None, str]:
    """Percent of `steps` training steps' CPU time in the minGRU scan and in the recurrent sub-layers, forward and
    backward (None where the model has none), and the top operators.

    The scan's forward and the mixers' forward are labelled here with `record_function` (the modeling file looks
    `linear_scan` up in its module, and the mixer's `forward` on its class, at call time). A backward node is the
    mixer's when its forward op ran inside a labelled mixer: autograd gives both the same sequence number."""
    original_scan, original_forward = modeling.linear_scan, modeling.RecurrentMixer.forward

    def labelled_scan(*args, **kwargs):
        with torch.profiler.record_function(SCAN_EVENTS[0]):
            return original_scan(*args, **kwargs)

    def labelled_forward(self, *args, **kwargs):
        with torch.profiler.record_function(RECURRENCE_EVENT):
            return original_forward(self, *args, **kwargs)

    contender.model.train()
    modeling.linear_scan, modeling.RecurrentMixer.forward = labelled_scan, labelled_forward
    try:
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                train_step(contender, batch)
    finally:
        modeling.linear_scan, modeling.RecurrentMixer.forward = original_scan, original_forward
    averages = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    scan = sum(event.cpu_time_total for event in averages if event.key in SCAN_EVENTS)
    recurrence = recurrence_cpu_time(profiler.events())
    table = averages.table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS)
    return (100 * scan / total if scan else None), (100 * recurrence / total if recurrence else None), table


def descendants(event):
    for child in event.cpu_children:
        yield child
        yield from descendants(child)


def recurrence_cpu_time(events) -> float:
    """CPU time (us) of the labelled mixers' forward ranges and of the backward nodes of the ops they ran."""
    mixers = [event for event in events if event.name == RECURRENCE_EVENT]
    forward_ops = {(op.thread, op.sequence_nr) for mixer in mixers for op in descendants(mixer) if op.sequence_nr >= 0}
    backward = [
        event.cpu_time_total
        for event in events
        if event.name.startswith(BACKWARD_PREFIX) and (event.fwd_thread, event.sequence_nr) in forward_ops
    ]
    return sum(mixer.cpu_time_total for mixer in mixers) + sum(backward)


# ---------------------------------------------------------------------------------------------------------------
# --generation: decoding latency per token and prefill time
# ---------------------------------------------------------------------------------------------------------------


class StepClock(LogitsProcessor):
    """Stamps the time each new token's scores reach the logits processors (once per generated token)."""

    def __init__(self):
        self.marks: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.marks.append(time.perf_counter())
        return scores


def build_generation_pair(preset: str, args: BenchmarkArguments) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """Our causal LM and a LlamaForCausalLM of the same hidden size, layers and heads, whose feed-forward width
    makes the two equal in parameters; both in eval mode with sdpa attention."""
    positions = max(args.contexts) + args.new_tokens
    config = load_preset(preset, bidirectional=False, vocab_size=args.vocab_size, pad_token_id=0)
    config.max_position_embeddings = max(config.max_position_embeddings, positions)
    config._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    ours = RecurrentTransformerForCausalLM(config).eval()

    def llama(intermediate_size: int) -> LlamaForCausalLM:
        common = {
            "vocab_size": args.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": intermediate_size,
            "max_position_embeddings": positions,
            "pad_token_id": 0,
        }
        return LlamaForCausalLM(llama_config(common))

    # Llama's parameters grow by 3 x hidden per layer and unit of feed-forward width (gate, up and down).
    per_unit = 3 * config.hidden_size * config.num_hidden_layers
    probe = count_parameters(llama(FEED_FORWARD_STEP))
    units = (count_parameters(ours) - probe) / per_unit + FEED_FORWARD_STEP
    intermediate_size = max(FEED_FORWARD_STEP, round(units / FEED_FORWARD_STEP) * FEED_FORWARD_STEP)
    torch.manual_seed(args.seed)
    reference = llama(intermediate_size).eval()
    label = (
        f"Llama L{config.num_hidden_layers} H{config.hidden_size} A{config.num_attention_heads} "
        f"FF{intermediate_size} (parameter-matched)"
    )
    return ours, reference, label


def generation_latency(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, median seconds per decoded token) of one greedy `generate()` call."""
    clock = StepClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([clock]),
            pad_token_id=0,
        )
    if len(clock.marks) != new_tokens:
        raise RuntimeError(f"generate() stopped after {len(clock.marks)} of {new_tokens} tokens")
    gaps = [later - earlier for earlier, later in itertools.pairwise(clock.marks)]
    return clock.marks[0] - start, statistics.median(gaps)


def benchmark_generation(preset: str, args: BenchmarkArguments) -> dict:
    ours, reference, label = build_generation_pair(preset, args)
    models = {"ours": ours, "reference": reference}
    generator = torch.Generator().manual_seed(args.seed)
    prompts = {length: torch.randint(1, args.vocab_size, (1, length), generator=generator) for length in args.contexts}
    for model in models.values():  # warm-up: kernels, caches, generate's first-call work
        generation_latency(model, prompts[min(args.contexts)], 4)
    per_round = {name: {length: {"prefill": [], "per_token": []} for length in args.contexts} for name in models}
    for round_idx in range(args.rounds):
        order = list(models) if round_idx % 2 == 0 else list(models)[::-1]
        for length in args.contexts:
            for name in order:
                prefill, per_token = generation_latency(models[name], prompts[length], args.new_tokens)
                per_round[name][length]["prefill"].append(prefill)
                per_round[name][length]["per_token"].append(per_token)
    median = {
        name: {
            length: {key: statistics.median(values) for key, values in kinds.items()} for length, kinds in runs.items()
        }
        for name, runs in per_round.items()
    }
    shortest, longest = min(args.contexts), max(args.contexts)
    row = {"preset": preset, "reference": label}
    for name in models:
        prefix = "" if name == "ours" else "ref_"
        row[f"{prefix}params"] = count_parameters(models[name])
        for length in args.contexts:
            row[f"{prefix}ms_per_token_{length}"] = 1000 * median[name][length]["per_token"]
        row[f"{prefix}growth"] = median[name][longest]["per_token"] / median[name][shortest]["per_token"]
        row[f"{prefix}prefill_ms_{longest}"] = 1000 * median[name][longest]["prefill"]
    row[f"latency_ratio_{shortest}"] = (
        median["ours"][shortest]["per_token"] / median["reference"][shortest]["per_token"]
    )
    row[f"prefill_ratio_{longest}"] = median["ours"][longest]["prefill"] / median["reference"][longest]["prefill"]
    row["details"] = {"rounds": per_round}
    return row


def generation_model_columns(args: BenchmarkArguments) -> list[str]:
    """The columns --generation reports for each model (ours unprefixed, Llama's with ref_)."""
    return [f"ms_per_token_{length}" for length in args.contexts] + ["growth", f"prefill_ms_{max(args.contexts)}"]


def generation_columns(args: BenchmarkArguments) -> list[str]:
    shortest, longest = min(args.contexts), max(args.contexts)
    per_model = generation_model_columns(args)
    return ["preset", "params", "ref_params", *per_model, *(f"ref_{name}" for name in per_model),
            f"latency_ratio_{shortest}", f"prefill_ratio_{longest}", "reference"]  # fmt: skip


def format_generation_markdown(rows: list[dict], args: BenchmarkArguments, settings: dict) -> str:
    """One line for our model and one for Llama per preset, then the ratios the goals are stated in."""
    shortest, longest = min(args.contexts), max(args.contexts)
    per_model = generation_model_columns(args)
    lines = [
        "| preset | model | params | "
        + " | ".join(f"ms/token at {length}" for length in args.contexts)
        + f" | growth {longest}/{shortest} | prefill {longest} ms | ms/token vs Llama at {shortest} "
        f"| prefill vs Llama |",
        "|---|---|" + "---:|" * (len(per_model) + 3),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['preset']} | {row['reference']} |" + " n/a |" * (len(per_model) + 3))
            continue
        for prefix, model in (("", "ours"), ("ref_", row["reference"])):
            ratios = [row[f"latency_ratio_{shortest}"], row[f"prefill_ratio_{longest}"]] if not prefix else [None] * 2
            values = [row[f"{prefix}params"], *(row[f"{prefix}{name}"] for name in per_model), *ratios]
            lines.append(f"| {row['preset']} | {model} | " + " | ".join(
                "" if value is None else format_value(value) for value in values) + " |")  # fmt: skip
    lines += [
        "",
        f"batch 1, greedy generate(), {args.new_tokens} new tokens per prompt, contexts {args.contexts}, vocab "
        f"{args.vocab_size}, fp32, sdpa attention, {args.threads[0]} thread(s) on {settings['cpu']} (1-min load "
        f"average {settings['load_average_1min_start']} at start, {settings['load_average_1min_end']} at end), torch "
        f"{torch.__version__}, transformers {transformers.__version__}. ms/token: median gap between consecutive "
        f"tokens' scores; prefill: generate() start to the first token's scores; medians over {args.rounds} "
        "interleaved rounds. Llama: same hidden size, layers and heads, feed-forward width matched to our parameters.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# One preset, the table, the files
# ---------------------------------------------------------------------------------------------------------------


def build_contenders(preset: str, args: BenchmarkArguments) -> tuple[list[Contender], str]:
    """Our model and the reference (and, with --compile, a compiled copy of ours), each with its own AdamW; the
    reference's label. Built once per preset, for every length and thread count."""
    torch.manual_seed(args.seed)
    ours_model = build_ours(preset, args)
    torch.manual_seed(args.seed)
    reference_model, reference_label = build_reference(ours_model.config, args)
    if args.activation_checkpointing:
        ours_model.activation_checkpointing_enable(every_n_layers=args.checkpoint_every_n_layers)
        which = "" if args.checkpoint_every_n_layers == 1 else f" in one layer of {args.checkpoint_every_n_layers}"
        reference_label += f"; ours with activation checkpointing{which}, the reference without"
    contenders = [make_contender("ours", ours_model, args), make_contender("reference", reference_model, args)]
    if args.compile:
        # A copy with its own optimizer, so the eager and compiled models train independently.
        contenders.append(make_contender("compiled", torch.compile(copy.deepcopy(ours_model)), args))
    return contenders, reference_label


def benchmark_point(preset: str, contenders: list[Contender], reference_label: str, args, seq_len: int, threads: int):
    """One row of the table: the contenders' tokens/s, training memory (and profile) at one length and thread
    count."""
    torch.set_num_threads(threads)
    batch = make_batch(args, seq_len)
    where = f"{preset} at {seq_len} tokens, {threads} thread(s)"
    train = measure_throughput(contenders, train_step, batch, args)
    logger.info("%s: training tokens/s per round: %s", where, train)
    memory = {contender.name: peak_train_memory(contender, batch) for contender in contenders[:2]}
    infer = measure_throughput(contenders, infer_step, batch, args)
    logger.info("%s: inference tokens/s per round: %s", where, infer)
    train_median = {name: statistics.median(values) for name, values in train.items()}
    infer_median = {name: statistics.median(values) for name, values in infer.items()}
    row = {
        "preset": preset,
        "seq_len": seq_len,
        "batch_size": batch["input_ids"].shape[0],
        "threads": threads,
        "params": count_parameters(contenders[0].model),
        "ref_params": count_parameters(contenders[1].model),
        "train_tokens_per_s": train_median["ours"],
        "ref_train_tokens_per_s": train_median["reference"],
        "train_ratio": train_median["ours"] / train_median["reference"],
        "infer_tokens_per_s": infer_median["ours"],
        "ref_infer_tokens_per_s": infer_median["reference"],
        "infer_ratio": infer_median["ours"] / infer_median["reference"],
        "train_peak_mib": memory["ours"]["total_mib"],
        "ref_train_peak_mib": memory["reference"]["total_mib"],
        "reference": reference_label,
    }
    if args.compile:
        row["compiled_train_tokens_per_s"] = train_median["compiled"]
        row["compile_train_speedup"] = train_median["compiled"] / train_median["ours"]
        row["compiled_infer_tokens_per_s"] = infer_median["compiled"]
        row["compile_infer_speedup"] = infer_median["compiled"] / infer_median["ours"]
    if args.profile:
        row["scan_percent"], row["recurrence_percent"], row["profile"] = profile_training(
            contenders[0], batch, args.steps
        )
        logger.info("%s: where our training step's time goes\n%s", where, row["profile"])
    row["details"] = {
        "train_rounds": train,
        "infer_rounds": infer,
        # Same-round ratios: a check on the ratio of medians when the machine's load changes between rounds.
        "train_ratio_per_round": [o / r for o, r in zip(train["ours"], train["reference"], strict=True)],
        "infer_ratio_per_round": [o / r for o, r in zip(infer["ours"], infer["reference"], strict=True)],
        "memory": memory,
    }
    return row


def failed_row(preset: str, args: BenchmarkArguments, error: RuntimeError, **point) -> dict:
    """A row of n/a values naming the error (e.g. a kernel missing for --bf16 on this CPU, or memory at a length)."""
    logger.error("%s %s failed", preset, point or "", exc_info=error)
    message = f"{type(error).__name__}: {str(error).split('. ')[0][:120]}"
    row = dict.fromkeys(columns(args))
    row.update(preset=preset, **point, reference=f"failed: {message}", error=str(error))
    return row


def benchmark_or_fail(preset: str, args: BenchmarkArguments) -> list[dict]:
    """The preset's rows (one per length and thread count; one with --generation); a failure gives n/a rows where
    it happened, and the other lengths still run."""
    if args.generation:
        try:
            return [benchmark_generation(preset, args)]
        except RuntimeError as error:
            return [failed_row(preset, args, error)]
    points = [(seq_len, threads) for seq_len in sequence_lengths(args) for threads in args.threads]
    try:
        contenders, reference_label = build_contenders(preset, args)
    except RuntimeError as error:
        return [failed_row(preset, args, error, **point_keys(args, *point)) for point in points]
    rows = []
    for seq_len, threads in points:
        try:
            rows.append(benchmark_point(preset, contenders, reference_label, args, seq_len, threads))
        except RuntimeError as error:
            rows.append(failed_row(preset, args, error, **point_keys(args, seq_len, threads)))
        gc.collect()
    return rows


def point_keys(args: BenchmarkArguments, seq_len: int, threads: int) -> dict:
    return {"seq_len": seq_len, "batch_size": batch_size_at(args, seq_len), "threads": threads}


def columns(args: BenchmarkArguments) -> list[str]:
    if args.generation:
        return generation_columns(args)
    extra = (COMPILE_COLUMNS if args.compile else []) + (PROFILE_COLUMNS if args.profile else [])
    names = COLUMNS[:-1] + extra + COLUMNS[-1:]
    return names[:1] + SWEEP_COLUMNS + names[1:] if is_sweep(args) else names


def header(column: str, reference_name: str) -> str:
    text = (
        column.replace("ref_", f"{reference_name} ")
        .replace("_percent", " %")
        .replace("tokens_per_s", "tok/s")
        .replace("_mib", " MiB")
    )
    return text.replace("_", " ")


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_markdown(rows: list[dict], args: BenchmarkArguments, settings: dict) -> str:
    reference_name = "Llama" if args.causal else "BERT"
    names = columns(args)
    lines = [
        "| " + " | ".join(header(name, reference_name) for name in names) + " |",
        "|" + "|".join("---" if name in ("preset", "reference") else "---:" for name in names) + "|",
    ]
    lines += ["| " + " | ".join(format_value(row[name]) for name in names) + " |" for row in rows]
    task = "causal LM" if args.causal else f"sequence classification, {args.num_labels} labels"
    lines += [
        "",
        f"{task}; {batch_description(args)}, vocab {args.vocab_size}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}, sdpa attention, {threads_description(args)} on {settings['cpu']} "
        f"(1-min load average {settings['load_average_1min_start']} at start, {settings['load_average_1min_end']} "
        f"at end), torch {torch.__version__}, transformers {transformers.__version__}. "
        f"tok/s: median over {args.rounds} interleaved rounds of "
        f"{args.steps} steps after {args.warmup} warm-up steps; ratio = ours / {reference_name}. train peak MiB: "
        "parameters + AdamW state + peak tensor allocation of one training step (torch.profiler CPU allocator "
        "events; excludes runtime and oneDNN/MKL workspaces)." + (PROFILE_NOTE if args.profile else ""),
    ]
    return "\n".join(lines)


def batch_description(args: BenchmarkArguments) -> str:
    if not is_sweep(args):
        return f"batch {batch_size_at(args, args.seq_len)} x {args.seq_len} tokens"
    if args.tokens_per_batch is None:
        return f"batch {args.batch_size} at every length"
    return f"{args.tokens_per_batch} tokens per step at every length (batch = {args.tokens_per_batch} // seq len)"


def threads_description(args: BenchmarkArguments) -> str:
    return f"{args.threads[0]} thread(s)" if len(args.threads) == 1 else "threads per row"


def write_outputs(results: dict, output: str) -> list[Path]:
    stem = Path(output)
    stem = stem.with_suffix("") if stem.suffix in (".md", ".json") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path = Path(f"{stem}.md"), Path(f"{stem}.json")
    markdown_path.write_text(results["markdown"] + "\n")
    write_json(json_path, results)
    written = [markdown_path, json_path]
    sweep = "seq_len" in results["columns"]
    profiles = [
        f"## {row['preset']}"
        + (f", {row['seq_len']} tokens, {row['threads']} thread(s)" if sweep else "")
        + f"\n\n{row['profile']}"
        for row in results["rows"]
        if row.get("profile")
    ]
    if profiles:
        written.append(Path(f"{stem}-profile.txt"))
        written[-1].write_text("\n\n".join(profiles) + "\n")
    return written


def environment(args: BenchmarkArguments) -> dict:
    return {
        **asdict(args),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load(),
    }


def run(argv: list[str]) -> dict:
    """Benchmark every requested preset; print the markdown table and return the results as a dict."""
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads[0])  # --generation's; a training point sets its own
    settings = environment(args)
    logger.info("benchmark settings: %s", settings)
    rows = []
    try:
        for preset in args.presets:
            rows.extend(benchmark_or_fail(preset, args))
            logger.info("%s: %s", preset, {key: value for key, value in rows[-1].items() if key != "details"})
            gc.collect()
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a test session
    # Other processes on the machine show up here; a load above the thread count makes the numbers noisy.
    settings["load_average_1min_start"], settings["load_average_1min_end"] = settings.pop("load_average"), load()
    results = {"settings": settings, "columns": columns(args), "rows": rows}
    formatter = format_generation_markdown if args.generation else format_markdown
    results["markdown"] = formatter(rows, args, settings)
    print(results["markdown"])
    if args.output:
        for path in write_outputs(results, args.output):
            logger.info("wrote %s", path)
    return results


def main(argv: list[str] | None = None) -> dict:
    """Benchmark as the command line says. Bad input: one `error:` line, exit status 2."""
    return run_command(run, argv)
