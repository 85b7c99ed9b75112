"""Configuration of the recurrent Transformer: a Transformer whose layers can add a recurrent sub-layer."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Layer kinds, in the names transformers 5.x validates `layer_types` against.
RECURRENT_LAYER_TYPES = ("hybrid", "hybrid_sliding", "linear_attention")
ATTENTION_LAYER_TYPES = ("hybrid", "hybrid_sliding", "full_attention", "sliding_attention")
SLIDING_LAYER_TYPES = ("hybrid_sliding", "sliding_attention")
LAYER_TYPES = ("hybrid", "hybrid_sliding", "full_attention", "sliding_attention", "linear_attention")
# One letter per layer kind for `layer_pattern`, e.g. "RRRA" or "HA".
PATTERN_LETTERS = {
    "H": "hybrid",
    "S": "hybrid_sliding",
    "A": "full_attention",
    "L": "sliding_attention",
    "R": "linear_attention",
}
# How many state tensors each cell carries between steps (LSTM: h and c).
CELL_STATES = {"lstm": 2, "gru": 1, "rnn": 1, "mingru": 1, "gla": 1}
# Every Auto class this model serves, written into each saved config.json so that a folder saved from any head
# loads through any of them with `trust_remote_code=True` (save_pretrained alone records only the saved class).
AUTO_MAP = {
    "AutoConfig": "configuration_recurrent_transformer.RecurrentTransformerConfig",
    "AutoModel": "modeling_recurrent_transformer.RecurrentTransformerModel",
    "AutoModelForSequenceClassification": "modeling_recurrent_transformer.RecurrentTransformerForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_recurrent_transformer.RecurrentTransformerForTokenClassification",
    "AutoModelForMaskedLM": "modeling_recurrent_transformer.RecurrentTransformerForMaskedLM",
    "AutoModelForCausalLM": "modeling_recurrent_transformer.RecurrentTransformerForCausalLM",
}


@strict
class RecurrentTransformerConfig(PreTrainedConfig):
    r"""Transformer whose layers can add a recurrent sub-layer (LSTM, GRU, RNN or minGRU) before self-attention.

    Each layer is one of `layer_types`: `"hybrid"` (recurrence, then attention), `"hybrid_sliding"` (recurrence,
    then attention within `sliding_window` tokens), `"full_attention"` (a plain Transformer layer),
    `"sliding_attention"` (local attention only: a long-input layer whose cost grows linearly with length) or
    `"linear_attention"` (recurrence only). Each layer ends with a feed-forward sub-layer unless
    `intermediate_size` is 0. With `layer_types` all `"linear_attention"` and `intermediate_size=0` the model is a
    plain stacked LSTM; with all `"full_attention"` it is a plain Transformer.

    Args:
        layer_types (`list[str]`, *optional*): one kind per layer; `None` expands `layer_pattern`.
        layer_pattern (`str`, *optional*, defaults to `"hybrid"`): a short way to write `layer_types`: one kind
            name repeated for every layer (`"hybrid"`), or letters cycled over the layers: `H` hybrid,
            `S` hybrid_sliding, `A` full_attention, `L` sliding_attention, `R` linear_attention (`"RRRA"`: three
            recurrent layers, then attention). Only the expanded `layer_types` is saved.
        recurrent_cell (`str`, *optional*, defaults to `"lstm"`): `"lstm"`, `"gru"`, `"rnn"` (tanh), `"mingru"`
            (a gated recurrence that is linear in its state and runs as a parallel scan, no loop over steps) or
            `"gla"` (gated linear attention: a matrix state per head, `num_attention_heads` heads, decayed by a
            data-dependent gate and run in chunks of matrix products; RetNet/Mamba-2/GLA's family).
        mingru_candidate (`str`, *optional*, defaults to `"positive"`): minGRU's candidate state from its
            projection x: `"positive"`, the paper's g(x) (x + 0.5 from 0 up, sigmoid(x) below; positive, as its
            log-space scan needs), or `"linear"`, x itself (the scan here is in linear space). Every state is then a
            gated average of positive values, so each layer adds an offset shared by all tokens and documents; with
            `"linear"` the states are centred (on 20 Newsgroups at initialisation, mean-pooled documents differed by
            62 % of their norm after six layers with `"linear"`, by 21 % with `"positive"`).
        recurrent_hidden_size (`int`, *optional*): width of the recurrent state, summed over directions (a
            bidirectional layer gives each direction half); `None` means `hidden_size`. A projection back to
            `hidden_size` is added when the two differ.
        recurrent_window (`int`, *optional*): `None` runs the recurrence over the whole sequence; `k >= 2` runs it
            over each position's last `k` tokens only (R-Transformer's LocalRNN).
        bidirectional (`bool`, *optional*, defaults to `True`): `True` gives an encoder (non-causal attention,
            recurrence in both directions) for classification, tagging and masked-LM; `False` a causal decoder.
        position_embedding_type (`str`, *optional*, defaults to `"none"`): `"none"` (the recurrence encodes
            order), `"absolute"` (learned) or `"rope"` (rotary, on queries and keys).
        rope_theta (`float`, *optional*, defaults to 10000.0): base of the rotary frequencies.
        sliding_window (`int`, *optional*): attention window of `"hybrid_sliding"` and `"sliding_attention"`
            layers: in a causal decoder each token sees the last `sliding_window` tokens (itself included), in an
            encoder the tokens at most `sliding_window` positions away on either side.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1): dropout on each sub-layer's output.
        classifier_dropout (`float`, *optional*): dropout before classification heads; `None` means
            `hidden_dropout_prob`.
        classifier_pooling (`str`, *optional*, defaults to `"auto"`): how sequence classification pools the real
            tokens (from `attention_mask`): `"mean"`, `"first"`, `"last"`, or `"auto"` (last real token for a
            causal body, mean for a bidirectional one).
        classifier_pooler (`bool`, *optional*, defaults to `False`): pass the pooled vector through a dense layer
            and tanh before dropout and the classifier (BERT's pooler on [CLS], RoBERTa's classification dense).
        norm_placement (`str`, *optional*, defaults to `"pre"`): `"pre"`: each sub-layer reads a normalised copy,
            h = h + dropout(f(norm(h))), and the body ends with a final norm; `"post"` (BERT's): attention and
            feed-forward are h = norm(h + dropout(f(h))) and there is no final norm. A recurrent sub-layer stays a
            pre-norm residual either way, so that a zero gate leaves a post-norm stack exactly as it was.
        embedding_norm (`bool`, *optional*, defaults to `False`): a LayerNorm on the (token + position) embeddings,
            before their dropout (BERT's `embeddings.LayerNorm`).
        recurrent_gate (`bool`, *optional*, defaults to `False`): multiply each recurrent sub-layer's output by a
            learned per-channel vector (ReZero / LayerScale), so that recurrence can be added to a trained model
            without changing what it computes at the start.
        recurrent_gate_init (`float`, *optional*, defaults to 0.0): initial value of every entry of that vector.
        sparse_prediction (`bool`, *optional*, defaults to `False`): in `RecurrentTransformerForMaskedLM`, when
            `labels` are given, score only the labelled (masked) tokens: the logits are (number of labelled tokens,
            vocab_size) instead of (batch, seq_len, vocab_size), the loss the same (ModernBERT's option of that name).
    """

    model_type = "recurrent_transformer"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 8000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    layer_types: list[str] | None = None
    layer_pattern: str | None = "hybrid"
    recurrent_cell: Literal["lstm", "gru", "rnn", "mingru", "gla"] = "lstm"
    mingru_candidate: Literal["positive", "linear"] = "positive"
    recurrent_hidden_size: int | None = None
    recurrent_window: int | None = None
    bidirectional: bool = True
    position_embedding_type: Literal["none", "absolute", "rope"] = "none"
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    sliding_window: int | None = None
    attention_bias: bool = True
    hidden_dropout_prob: float = 0.1
    attention_dropout: float = 0.0
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    use_cache: bool = True
    classifier_pooling: Literal["auto", "mean", "first", "last"] = "auto"
    classifier_pooler: bool = False
    norm_placement: Literal["pre", "post"] = "pre"
    embedding_norm: bool = False
    recurrent_gate: bool = False
    recurrent_gate_init: float = 0.0
    sparse_prediction: bool = False

    def __post_init__(self, **kwargs):
        if self.layer_types is None:
            self.layer_types = expand_layer_pattern(self.layer_pattern, self.num_hidden_layers)
        else:
            self.layer_types = list(self.layer_types)
            # layer_pattern has a default, so only a pattern that disagrees with the list is an error.
            if self.layer_pattern not in (None, "hybrid") and (
                expand_layer_pattern(self.layer_pattern, self.num_hidden_layers) != self.layer_types
            ):
                raise ValueError(
                    f"layer_pattern={self.layer_pattern!r} contradicts layer_types={self.layer_types}: "
                    "give one of them (layer_types=None expands the pattern)"
                )
        # The expanded list is the source of truth and what gets saved.
        self.layer_pattern = None
        if self.recurrent_hidden_size is None:
            self.recurrent_hidden_size = self.hidden_size
        super().__post_init__(**kwargs)
        # Keep a folder loadable through every Auto class; the heads a direction refuses still fail clearly.
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}

    @property
    def number_of_conv_states(self) -> int:
        """State slots per recurrent layer in transformers' cache (an LSTM carries h and c)."""
        return CELL_STATES.get(self.recurrent_cell, 1)

    @property
    def has_recurrence(self) -> bool:
        return any(kind in RECURRENT_LAYER_TYPES for kind in self.layer_types)

    @property
    def has_attention(self) -> bool:
        return any(kind in ATTENTION_LAYER_TYPES for kind in self.layer_types)

    def validate_architecture(self):
        """Cross-field checks; each error names the field and what is allowed."""
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.intermediate_size < 0:
            raise ValueError(f"intermediate_size={self.intermediate_size} must be >= 0 (0 = no feed-forward sub-layer)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of num_attention_heads={self.num_attention_heads}"
            )
        if self.position_embedding_type == "rope" and (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"position_embedding_type='rope' needs an even head size, got hidden_size / num_attention_heads = "
                f"{self.hidden_size // self.num_attention_heads}"
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_hidden_layers={self.num_hidden_layers}"
            )
        for kind in self.layer_types:
            if kind not in LAYER_TYPES:
                raise ValueError(f"layer_types entry {kind!r} is not one of {LAYER_TYPES}")
        if self.recurrent_hidden_size < 1 or (self.bidirectional and self.recurrent_hidden_size % 2):
            raise ValueError(
                f"recurrent_hidden_size={self.recurrent_hidden_size} must be a positive integer, and even when "
                "bidirectional=True (each direction gets half)"
            )
        if self.recurrent_cell not in CELL_STATES:
            raise ValueError(f"recurrent_cell={self.recurrent_cell!r} is not one of {tuple(CELL_STATES)}")
        directions = 2 if self.bidirectional else 1
        if self.recurrent_cell == "gla" and (self.recurrent_hidden_size // directions) % self.num_attention_heads:
            raise ValueError(
                f"recurrent_cell='gla' splits each direction's recurrent_hidden_size={self.recurrent_hidden_size} "
                f"(/ {directions} directions) into num_attention_heads={self.num_attention_heads} heads: make it a "
                "multiple"
            )
        if self.mingru_candidate not in ("positive", "linear"):
            raise ValueError(f"mingru_candidate={self.mingru_candidate!r} must be 'positive' or 'linear'")
        if self.recurrent_window is not None and self.recurrent_window < 2:
            raise ValueError(
                f"recurrent_window={self.recurrent_window} must be None (whole sequence) or an integer >= 2"
            )
        sliding = sorted(set(self.layer_types) & set(SLIDING_LAYER_TYPES))
        if sliding and (self.sliding_window is None or self.sliding_window < 1):
            raise ValueError(
                f"sliding_window={self.sliding_window} must be a positive integer when layer_types holds {sliding}"
            )
        for name in ("hidden_dropout_prob", "attention_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1)")
        if self.classifier_pooling == "first" and not self.bidirectional:
            raise ValueError(
                "classifier_pooling='first' needs bidirectional=True: in a causal body the first token sees nothing "
                "after it (use 'last' or 'auto')"
            )
        if not math.isfinite(self.recurrent_gate_init):
            raise ValueError(f"recurrent_gate_init={self.recurrent_gate_init} must be a finite number")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} must be in [0, vocab_size={self.vocab_size})")


def expand_layer_pattern(pattern: str | None, num_hidden_layers: int) -> list[str]:
    """`"hybrid"` -> every layer hybrid; `"RRA"` -> letters cycled over the layers (see `PATTERN_LETTERS`)."""
    if pattern is None:
        pattern = "hybrid"
    if pattern in LAYER_TYPES:
        return [pattern] * num_hidden_layers
    if not pattern or any(letter not in PATTERN_LETTERS for letter in pattern):
        raise ValueError(
            f"layer_pattern={pattern!r} must be one of {LAYER_TYPES} or a string of the letters "
            f"{''.join(PATTERN_LETTERS)} ({', '.join(f'{k}={v}' for k, v in PATTERN_LETTERS.items())})"
        )
    return [PATTERN_LETTERS[pattern[i % len(pattern)]] for i in range(num_hidden_layers)]


__all__ = ["RecurrentTransformerConfig"]
