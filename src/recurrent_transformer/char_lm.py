"""Character-level language-modelling data: a character tokenizer and random training blocks."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

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
        raise FileNotFoundError(f"text file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if len(text) < 10:
        raise ValueError(f"text file {str(path)!r} holds {len(text)} characters: too little to train on")
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
