"""Shared fixtures: a tiny config factory and seeded inputs (the data the tests read is in tests/fixtures)."""

import os
import textwrap

import torch

from recurrent_transformer import RecurrentTransformerConfig

# The tests run tiny models, where a second thread costs more than it gives (and 2 cores are shared with the
# subprocesses some tests start).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the processes the tests start (accelerate launch, remote code)


CELLS = ("lstm", "gru", "rnn", "mingru", "gla")
LAYER_TYPES = ("hybrid", "full_attention", "linear_attention", "sliding_attention", "hybrid_sliding")
SLIDING = ("sliding_attention", "hybrid_sliding")


def tiny_config(**overrides) -> RecurrentTransformerConfig:
    """vocab 64, hidden 32, 2 layers, 4 heads; no dropout so runs are comparable."""
    values = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        pad_token_id=0,
    )
    values.update(overrides)
    return RecurrentTransformerConfig(**values)


def randomize_biases(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero biases everywhere: a masked step that only zeroes its input would still move the state."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bias" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def padded_batch(sequences, side, pad_token_id=0):
    """Right- or left-padded input_ids and attention_mask for token-id sequences of different lengths."""
    max_len = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), max_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(len(sequences), max_len, dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(max_len - len(seq), max_len)
        input_ids[row, span] = seq
        attention_mask[row, span] = 1
    return input_ids, attention_mask


# The first lines of a script run in a subprocess where the package must not import (remote-code tests): a finder
# that refuses `recurrent_transformer`, so a folder can only load through its own code files.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "recurrent_transformer" or name.startswith("recurrent_transformer."):
                raise ImportError("recurrent_transformer is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockPackage())
    """
)
