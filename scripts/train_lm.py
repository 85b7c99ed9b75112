"""Character-level language modelling on tiny Shakespeare: train causal presets, compare validation loss, sample.

Run from the repository root:

    python scripts/train_lm.py configs/train/shakespeare_char.yaml
    python scripts/train_lm.py configs/train/shakespeare_char.yaml --model_configs char-hybrid --max_iters 200

The settings in shakespeare_char.yaml are nanoGPT's CPU settings for shakespeare_char (block 64, batch 12,
2,000 iterations, AdamW lr 1e-3 decaying to 1e-4 over 2,000 iterations with 100 warm-up steps, beta2 0.99,
dropout 0). Every preset named in `--model_configs` trains on the same batches from the same seed. The first
90 % of the text trains, the last 10 % validates. Each model is saved with its character tokenizer under
`output_dir/<preset>/` (loadable with `AutoModelForCausalLM` and `pipeline("text-generation")`); `results.json`
and `results.md` hold the table printed at the end: validation loss (nanoGPT's estimate over `eval_iters` random
batches, and the exact loss over every 64-character block of the validation split), parameters and wall time.
"""

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import set_seed

from recurrent_transformer import RecurrentTransformerForCausalLM
from recurrent_transformer.char_lm import all_blocks, char_tokenizer, encode_text, random_blocks, read_text_splits
from recurrent_transformer.cli import ArgumentError, parse_yaml_and_flags
from recurrent_transformer.presets import load_preset

logger = logging.getLogger("train_lm")


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


def build_optimizer(model, args: LMArguments) -> torch.optim.AdamW:
    """Weight decay on matrices only (nanoGPT): not on biases, norms or embeddings' 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.beta1, args.beta2))


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
    optimizer = build_optimizer(model, args)
    batches = torch.Generator().manual_seed(args.seed)
    evaluation = torch.Generator().manual_seed(args.seed + 1)
    curve = []
    start = time.perf_counter()
    for step in range(args.max_iters + 1):
        if step % args.eval_interval == 0 or step == args.max_iters:
            val_loss = estimate_loss(model, val_ids, args, evaluation)
            curve.append({"step": step, "val_loss": val_loss, "seconds": time.perf_counter() - start})
            logger.info("%s step %d: val loss %.4f (%.0f s)", preset, step, val_loss, curve[-1]["seconds"])
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


def check_output_dir(args: LMArguments) -> None:
    results = Path(args.output_dir) / "results.json"
    if results.exists() and not args.overwrite_output_dir:
        raise ArgumentError(
            f"output_dir {args.output_dir!r} already holds a run (results.json); pass --overwrite_output_dir to "
            "replace it or choose another --output_dir"
        )


def run(argv: list[str] | None = None) -> list[dict]:
    (args,) = parse_yaml_and_flags((LMArguments,), argv)
    presets = [name.strip() for name in args.model_configs.split(",") if name.strip()]
    for preset in presets:
        try:
            load_preset(preset)  # fail on an unknown preset before any training
        except ValueError as error:
            raise ArgumentError(str(error)) from None
    check_output_dir(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        train_text, val_text = read_text_splits(args.text_file, args.train_fraction)
    except (FileNotFoundError, ValueError) as error:
        raise ArgumentError(str(error)) from None
    tokenizer = char_tokenizer(train_text + val_text, model_max_length=args.block_size)
    train_ids, val_ids = encode_text(tokenizer, train_text), encode_text(tokenizer, val_text)
    logger.info("arguments: %s", json.dumps(asdict(args)))
    logger.info("%d training and %d validation characters, vocabulary %d", len(train_ids), len(val_ids), len(tokenizer))

    results = [train_one(preset, tokenizer, train_ids, val_ids, args) for preset in presets]
    table = results_table(results, args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"arguments": asdict(args), "results": results}, indent=2))
    (output_dir / "results.md").write_text(table + "\n")
    print(table)
    for result in results:
        print(f"\n--- sample from {result['preset']} ---\n{result['sample']}")
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(argv)
    except ArgumentError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
