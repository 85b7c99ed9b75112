"""`recurrent-transformer train-lm`: character-level language modelling on plain text (tiny Shakespeare by default):
causal presets trained on the same batches from the same seed, their validation losses compared, samples printed.

    recurrent-transformer train-lm configs/train/shakespeare_char.yaml
    recurrent-transformer train-lm configs/train/shakespeare_char.yaml --model_configs char-hybrid --max_iters 200

The settings in shakespeare_char.yaml are nanoGPT's CPU settings for shakespeare_char (block 64, batch 12, 2,000
iterations, AdamW lr 1e-3 decaying to 1e-4 over 2,000 iterations with 100 warm-up steps, beta2 0.99, dropout 0). The
first 90 % of the text trains, the last 10 % validates. Each model is saved with its character tokenizer under
`output_dir/<preset>/` (loadable with `AutoModelForCausalLM` and `pipeline("text-generation")`); `results.json` and
`results.md` hold the table printed at the end: validation loss (nanoGPT's estimate over `eval_iters` random batches,
and the exact loss over every block of the validation split), parameters and wall time.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, set_seed
from transformers.utils import logging

from ..cli import UsageError, parse_arguments, run_command
from ..files import check_output_dir, write_json
from ..modeling_recurrent_transformer import RecurrentTransformerForCausalLM
from ..presets import load_preset, preset_source
from .arguments import check_ranges
from .build import build_optimizer

logger = logging.get_logger(__name__)

PAD, UNK = "[PAD]", "[UNK]"


def char_tokenizer(text: str, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """One token per character seen in `text` (sorted), plus [PAD]=0 and [UNK]=1; decoding joins characters."""
    vocab = {PAD: 0, UNK: 1}
    for char in sorted(set(text)):
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    extra = {"model_max_length": model_max_length} if model_max_length else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, **extra)


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> torch.Tensor:
    """The whole text as one long tensor of ids (a dictionary lookup per character: fast on megabytes)."""
    vocab = tokenizer.get_vocab()
    unk = vocab[UNK]
    return torch.tensor([vocab.get(char, unk) for char in text], dtype=torch.long)


def read_text_splits(path: str | Path, train_fraction: float) -> tuple[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text_file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if len(text) < 10:
        raise UsageError(f"text_file {str(path)!r} holds {len(text)} characters: too little to train on")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def random_blocks(ids: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    """`batch_size` random windows of `block_size + 1` tokens: inputs and next-token targets (nanoGPT's get_batch)."""
    starts = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([ids[start : start + block_size + 1] for start in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def all_blocks(ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split cut into consecutive non-overlapping blocks (for an exact, deterministic validation loss)."""
    count = (len(ids) - 1) // block_size
    inputs = ids[: count * block_size].view(count, block_size)
    targets = ids[1 : count * block_size + 1].view(count, block_size)
    return inputs, targets


@dataclass
class LMArguments:
    text_file: str = field(default="../shared/data/tinyshakespeare/input.txt", metadata={"help": "Plain text."})
    train_fraction: float = field(default=0.9, metadata={"help": "Leading share of the text used for training."})
    model_configs: str = field(
        default="char-hybrid,char-transformer", metadata={"help": "Comma-separated presets (names or JSON paths)."}
    )
    output_dir: str = field(default="runs/shakespeare_char")
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an output folder's results."})
    block_size: int = field(default=64, metadata={"help": "Context length in characters."})
    batch_size: int = field(default=12)
    max_iters: int = field(default=2000)
    learning_rate: float = field(default=1e-3)
    min_lr: float = field(default=1e-4)
    warmup_iters: int = field(default=100)
    lr_decay_iters: int = field(default=2000)
    weight_decay: float = field(default=0.1)
    beta1: float = field(default=0.9)
    beta2: float = field(default=0.99)
    grad_clip: float = field(default=1.0)
    eval_interval: int = field(default=250)
    eval_iters: int = field(default=20, metadata={"help": "Random batches per loss estimate (nanoGPT's measure)."})
    seed: int = field(default=1337)
    threads: int = field(default=0, metadata={"help": "torch threads; 0 keeps torch's default."})
    sample_tokens: int = field(default=300, metadata={"help": "Characters sampled from each model at the end."})
    sample_prompt: str = field(default="ROMEO:")


def learning_rate_at(step: int, args: LMArguments) -> float:
    """nanoGPT's schedule: linear warm-up, cosine decay to min_lr, then constant."""
    if step < args.warmup_iters:
        return args.learning_rate * (step + 1) / (args.warmup_iters + 1)
    if step > args.lr_decay_iters:
        return args.min_lr
    ratio = (step - args.warmup_iters) / max(1, args.lr_decay_iters - args.warmup_iters)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.learning_rate - args.min_lr)


def build_model(preset: str, tokenizer, args: LMArguments) -> RecurrentTransformerForCausalLM:
    config = load_preset(
        preset,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=max(args.block_size, 64),
    )
    return RecurrentTransformerForCausalLM(config)


@torch.no_grad()
def estimate_loss(model, ids: torch.Tensor, args: LMArguments, generator: torch.Generator) -> float:
    model.eval()
    losses = []
    for _ in range(args.eval_iters):
        inputs, targets = random_blocks(ids, args.block_size, args.batch_size, generator)
        losses.append(next_token_loss(model, inputs, targets))
    model.train()
    return float(torch.tensor(losses).mean())


def next_token_loss(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def exact_loss(model, ids: torch.Tensor, args: LMArguments, batch_size: int = 256) -> float:
    """Mean loss over every block of the split, each block read from a fresh state (context <= block_size)."""
    model.eval()
    inputs, targets = all_blocks(ids, args.block_size)
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        batch_loss = next_token_loss(model, inputs[start : start + batch_size], targets[start : start + batch_size])
        total += float(batch_loss) * len(inputs[start : start + batch_size])
    model.train()
    return total / len(inputs)


def train_one(preset: str, tokenizer, train_ids, val_ids, args: LMArguments) -> dict:
    set_seed(args.seed)
    model = build_model(preset, tokenizer, args).train()
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, (args.beta1, args.beta2))
    batches = torch.Generator().manual_seed(args.seed)
    evaluation = torch.Generator().manual_seed(args.seed + 1)
    curve = []
    start = time.perf_counter()
    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            val_loss = estimate_loss(model, val_ids, args, evaluation)
            curve.append({"step": step, "val_loss": val_loss, "seconds": time.perf_counter() - start})
            logger.info(f"{preset} step {step}: val loss {val_loss:.4f} ({curve[-1]['seconds']:.0f} s)")
        if step == args.max_iters:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, args)
        inputs, targets = random_blocks(train_ids, args.block_size, args.batch_size, batches)
        loss = next_token_loss(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
    train_seconds = time.perf_counter() - start
    result = {
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_loss_estimate": curve[-1]["val_loss"],
        "val_loss_exact": exact_loss(model, val_ids, args),
        "train_seconds": train_seconds,
        "curve": curve,
    }
    folder = Path(args.output_dir) / Path(preset).stem
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result["sample"] = sample_text(model, tokenizer, args)
    return result


@torch.no_grad()
def sample_text(model, tokenizer, args: LMArguments, top_k: int = 40) -> str:
    """Sampled continuation of `sample_prompt`. A model with learned absolute positions only knows
    `max_position_embeddings` positions, so it reads a cropped context as nanoGPT does; the others generate
    through their recurrent cache, whose cost per token does not grow."""
    model.eval()
    torch.manual_seed(args.seed)
    ids = tokenizer(args.sample_prompt, return_tensors="pt")["input_ids"]
    if model.config.position_embedding_type != "absolute":
        return tokenizer.decode(
            model.generate(ids, max_new_tokens=args.sample_tokens, do_sample=True, top_k=top_k)[0],
            skip_special_tokens=True,
        )
    for _ in range(args.sample_tokens):
        logits = model(ids[:, -model.config.max_position_embeddings :]).logits[:, -1]
        kth = torch.topk(logits, top_k).values[:, -1:]
        probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1)], dim=1)
    return tokenizer.decode(ids[0], skip_special_tokens=True)


def results_table(results: list[dict], args: LMArguments) -> str:
    lines = [
        f"| preset | parameters | val loss (estimate, {args.eval_iters} batches) | val loss (all blocks) | "
        "train wall time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['preset']} | {result['parameters']:,} | {result['val_loss_estimate']:.4f} | "
            f"{result['val_loss_exact']:.4f} | {result['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


# (field, test, what it must be) for the settings that have a range.
RANGES = [
    *[(name, lambda value: value >= 1, "a positive integer")
      for name in ("block_size", "batch_size", "max_iters", "eval_interval", "eval_iters", "lr_decay_iters")],
    *[(name, lambda value: value >= 0, "0 or more")
      for name in ("warmup_iters", "weight_decay", "grad_clip", "threads", "sample_tokens", "min_lr")],
    ("learning_rate", lambda value: value > 0, "above 0"),
    ("train_fraction", lambda value: 0 < value < 1, "between 0 and 1"),
    *[(name, lambda value: 0 <= value < 1, "in [0, 1)") for name in ("beta1", "beta2")],
]  # fmt: skip


def check_settings(args: LMArguments) -> list[str]:
    """Every check that needs no text; touches nothing. Returns the presets."""
    check_ranges(args, ranges=RANGES)
    presets = [name.strip() for name in args.model_configs.split(",") if name.strip()]
    if not presets:
        raise UsageError("model_configs names no preset")
    for preset in presets:
        try:
            preset_source(preset)
        except ValueError as error:
            raise UsageError(str(error)) from None
    check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, can_resume=False, held={"results.json"})
    return presets


def train_language_models(args: LMArguments) -> list[dict]:
    """Every preset on the same batches; writes each model, results.json and results.md; returns the results."""
    presets = check_settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_text, val_text = read_text_splits(args.text_file, args.train_fraction)
    if len(val_text) <= args.block_size + 1:
        raise UsageError(f"text_file {args.text_file!r}: its validation part is shorter than block_size + 1")
    tokenizer = char_tokenizer(train_text + val_text, model_max_length=args.block_size)
    train_ids, val_ids = encode_text(tokenizer, train_text), encode_text(tokenizer, val_text)
    logger.info(f"arguments: {json.dumps(asdict(args))}")
    logger.info(f"{len(train_ids)} training and {len(val_ids)} validation characters, vocabulary {len(tokenizer)}")

    results = [train_one(preset, tokenizer, train_ids, val_ids, args) for preset in presets]
    table = results_table(results, args)
    output_dir = Path(args.output_dir)
    write_json(output_dir / "results.json", {"arguments": asdict(args), "results": results})
    (output_dir / "results.md").write_text(table + "\n")
    print(table)
    for result in results:
        print(f"\n--- sample from {result['preset']} ---\n{result['sample']}")
    return results


def run(argv: list[str]) -> list[dict]:
    (args,) = parse_arguments((LMArguments,), argv)
    return train_language_models(args)


def main(argv: list[str] | None = None) -> list[dict]:
    """Train and compare as the command line says; returns the results. Bad input: one `error:` line, exit 2."""
    return run_command(run, argv)
