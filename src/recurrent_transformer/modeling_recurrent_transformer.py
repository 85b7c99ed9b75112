"""Recurrent Transformer: Transformer layers that can add a recurrent sub-layer before self-attention.

Each layer, with `kind = config.layer_types[i]`, computes (pre-norm, every sub-layer added back to the residual):

    if kind has recurrence:  h = h + dropout(RecurrentMixer(norm(h)))   # LSTM | GRU | RNN | minGRU | GLA
    if kind has attention:   h = h + dropout(SelfAttention(norm(h)))    # eager | sdpa | flash
    if intermediate_size:    h = h + dropout(FeedForward(norm(h)))

With `norm_placement="post"` (BERT's layout, so pretrained BERT-family weights load unchanged) attention and
feed-forward become h = norm(h + dropout(f(h))) and the body has no final norm, while the recurrence stays
h = h + gate * dropout(RecurrentMixer(norm(h))): with `recurrent_gate` at zero the layer is the pretrained one.

R-Transformer (Wang et al. 2019) runs the recurrence over a local window before attention and uses no position
embeddings; minGRU (Feng et al. 2024, "Were RNNs all we needed?") makes the gates depend on the input only, so the
recurrence is linear in its state and runs as a scan in two levels (step by step within chunks of 16, all chunks
at once, then across the chunks' ends). The `"gla"` cell (gated linear attention, Yang et al. 2024, here with one
data-dependent decay per head as in Mamba-2) keeps a matrix state per head and runs in chunks of matrix products.

Padding is exact, for right, left and inner padding and in both directions: minGRU and gla carry their state
through a padded step unchanged (zeroing the input is not enough once biases are non-zero); an LSTM/GRU/RNN reads
each row's real tokens before its padding (reversed for the backward direction), packed where a cache keeps its
final state.

This file and `configuration_recurrent_transformer.py` import only torch, public transformers modules and each
other, so a saved folder loads with `trust_remote_code=True` without the package.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import (
    create_bidirectional_mask,
    create_bidirectional_sliding_window_mask,
    create_causal_mask,
    create_sliding_window_causal_mask,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_recurrent_transformer import (
    ATTENTION_LAYER_TYPES,
    RECURRENT_LAYER_TYPES,
    SLIDING_LAYER_TYPES,
    RecurrentTransformerConfig,
)

logger = logging.get_logger(__name__)

TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# One step of the same cells: what a decoding step runs. nn.LSTM on one token at batch 1 goes through oneDNN, whose
# per-call set-up dominates (5.6 ms per call against 0.22 ms for torch.lstm_cell, hidden 512, one CPU thread).
STEP_FUNCTIONS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}
# One direction of the same cells over a whole (unpacked) sequence: what nn.LSTM/GRU/RNN run inside.
SEQUENCE_FUNCTIONS = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}


# ---------------------------------------------------------------------------------------------------------------
# Small pure functions
# ---------------------------------------------------------------------------------------------------------------


def real_tokens_first(padding_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Permutation that moves each row's real tokens to the front, in order; its inverse; the row lengths.

    Torch's packed sequences only take right padding: gathering with `order` turns any padding (left, right or
    holes) into right padding, and gathering with `inverse` puts the outputs back. The sort keys are unique
    (position, plus seq_len for a padded one), so a plain argsort gives the stable order: ONNX's TorchScript
    exporter cannot express `argsort(stable=True)`.
    """
    seq_len = padding_mask.shape[1]
    positions = torch.arange(seq_len, device=padding_mask.device)
    order = torch.argsort(positions + (~padding_mask).long() * seq_len, dim=1)  # (batch, seq_len)
    inverse = torch.argsort(order, dim=1)
    return order, inverse, padding_mask.sum(dim=1)


def reversed_real_tokens(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(batch, seq_len) index that reverses each right-padded row's first `lengths` steps and leaves its padding in
    place; it is its own inverse."""
    positions = torch.arange(seq_len, device=lengths.device).expand(lengths.shape[0], -1)
    lengths = lengths.unsqueeze(1)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def gather_time(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`tensor[b, index[b, t]]` for a (batch, seq_len, dim) tensor."""
    return tensor.gather(1, index.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]))


def mingru_candidate(values: torch.Tensor, linear: bool = False, in_place: bool = False) -> torch.Tensor:
    """minGRU's candidate state from its projection: the projection itself with `linear` (`mingru_candidate="linear"`),
    else the positive activation g(x): x + 0.5 for x >= 0, sigmoid(x) below, computed as sigmoid(min(x, 0)) +
    max(x, 0) (bitwise the same numbers: sigmoid(0) is 0.5 exactly): two clamps, a sigmoid and an add instead of
    torch.where and its comparison (one thread, 2.6M contiguous floats: 17 ms against 28 ms). `in_place` writes it
    into `values` (the same floats)."""
    if linear:
        return values
    below = values.clamp(max=0).sigmoid_()
    return values.clamp_(min=0).add_(below) if in_place else values.clamp(min=0).add_(below)


def scan_rounds(
    coeffs: torch.Tensor, values: torch.Tensor, initial: torch.Tensor | None, reverse: bool = False
) -> torch.Tensor:
    """States of h_t = coeffs_t * h_{t-1} + values_t along dim 1 from `initial` (batch, dim) (None: zeros), or of
    h_t = coeffs_t * h_{t+1} + values_t from the end with `reverse`: a Hillis-Steele scan, ceil(log2(seq_len))
    rounds of whole-tensor multiply-adds, no loop over single steps. Everything stays in linear space: products of
    gates in (0, 1] and sums of positive terms lose no precision with length, unlike a log-space scan, and no exp/log
    is computed. `chunked_scan` runs it across the ends of its chunks."""
    coeffs, values = coeffs.clone(), values.clone()
    first = -1 if reverse else 0
    if initial is not None:  # start from `initial`, not zero
        values[:, first] = torch.addcmul(values[:, first], coeffs[:, first], initial)
    seq_len, shift = values.shape[1], 1
    while shift < seq_len:
        head, tail = slice(None, -shift), slice(shift, None)
        target, source = (head, tail) if reverse else (tail, head)  # each step takes in the one `shift` before it
        values[:, target] = torch.addcmul(values[:, target], coeffs[:, target], values[:, source])
        if 2 * shift < seq_len:
            coeffs[:, target] = coeffs[:, target] * coeffs[:, source]
        shift *= 2
    return values


def chunked_scan(
    coeffs: torch.Tensor,
    values: torch.Tensor,
    initial: torch.Tensor | None,
    reverse: bool = False,
    chunk: int = 16,
    in_place: bool = False,
) -> torch.Tensor:
    """States of the recurrence of `scan_rounds` in two levels with O(seq_len) work: within chunks of `chunk` steps
    the recurrence runs step by step, all chunks of the batch at once (each step one multiply-add over
    seq_len / chunk positions, carrying the running products of the coefficients alongside), the chunks' end states
    are scanned across chunks from `initial` by `scan_rounds`, and each chunk then adds its entering state times its
    running products. Measured one thread, 16,384 steps x 160 floats (the backward direction of a (batch, seq_len,
    2, 160) tensor) at 128 to 8,192 steps per row: 3.8-4.6 ms, against 9.6-10.7 ms for the Hillis-Steele scan in
    chunks of 32 (5 whole passes per chunk) it replaced; chunks of 16 were the fastest of 8, 16 and 32.

    With `in_place` the states are written into `values` (returned) and `coeffs` is overwritten (for callers that own
    both, which saves two copies and an allocation; either may be a strided view, e.g. one direction's slice)."""
    batch_size, seq_len = values.shape[:2]
    if seq_len == 1:  # a decoding step
        states = scan_rounds(coeffs, values, initial, reverse)
        return values.copy_(states) if in_place else states
    chunk = min(chunk, seq_len)
    num_chunks = -(-seq_len // chunk)
    pad = num_chunks * chunk - seq_len
    work_coeffs, work_values = coeffs, values
    if pad:  # neutral steps (coefficient 1, value 0) on the side the scan ends at
        side = (0,) * (2 * (values.dim() - 2)) + ((pad, 0) if reverse else (0, pad))
        work_coeffs, work_values = F.pad(coeffs, side, value=1.0), F.pad(values, side, value=0.0)
    elif not in_place:
        work_coeffs, work_values = coeffs.clone(), values.clone()
    shape = (batch_size, num_chunks, chunk, *values.shape[2:])
    products, local = work_coeffs.view(shape), work_values.view(shape)  # the running products and in-chunk states
    before = 1 if reverse else -1  # where each step's predecessor lies
    for step in range(chunk - 2, -1, -1) if reverse else range(1, chunk):
        torch.addcmul(local[:, :, step], products[:, :, step], local[:, :, step + before], out=local[:, :, step])
        products[:, :, step].mul_(products[:, :, step + before])
    edge = 0 if reverse else -1  # where a chunk's state leaves it
    ends = scan_rounds(products[:, :, edge], local[:, :, edge], initial, reverse)  # (batch, chunks, ...)
    start = ends.new_zeros(ends[:, :1].shape) if initial is None else initial.unsqueeze(1).to(ends.dtype)
    entering = torch.cat([ends[:, 1:], start], dim=1) if reverse else torch.cat([start, ends[:, :-1]], dim=1)
    local.addcmul_(products, entering.unsqueeze(2))
    states = work_values[:, pad:] if reverse else work_values[:, :seq_len]
    if in_place and pad:
        values.copy_(states)
    return values if in_place else states


class LinearScan(torch.autograd.Function):
    """`scan_rounds` with its own backward: the gradient of a linear recurrence is the same recurrence run the other
    way (g_t = dL/dh_t + coeffs_{t+1} g_{t+1}), so backward costs one more scan and keeps only the coefficients and
    the states, not every round's intermediates."""

    @staticmethod
    def forward(ctx, coeffs, values, initial, reverse):
        states = chunked_scan(coeffs, values, initial, reverse)
        ctx.save_for_backward(coeffs, states, initial)
        ctx.reverse = reverse
        return states

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_states):
        coeffs, states, initial = ctx.saved_tensors
        reverse = ctx.reverse
        edge = torch.zeros_like(coeffs[:, :1])
        if reverse:  # h_t depends on h_{t+1}: gradients flow forward in time
            grad_coeffs_from = torch.cat([edge, coeffs[:, :-1]], dim=1)
            previous = torch.cat([states[:, 1:], initial.unsqueeze(1)], dim=1)
        else:
            grad_coeffs_from = torch.cat([coeffs[:, 1:], edge], dim=1)
            previous = torch.cat([initial.unsqueeze(1), states[:, :-1]], dim=1)
        grad_values = chunked_scan(grad_coeffs_from, grad_states, None, not reverse)
        first = -1 if reverse else 0
        return grad_values * previous, grad_values, coeffs[:, first] * grad_values[:, first], None


def mingru_terms(
    projected: torch.Tensor, keep: torch.Tensor | None, linear: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """minGRU's coefficients 1 - z and added values z * g(h~) per step from the gate projection, (batch, seq_len,
    directions, 2, width) -> two (batch, seq_len, directions, width) tensors; a step where `keep` (batch, seq_len)
    is False gets coefficient 1 and adds nothing, so it carries the state exactly."""
    gates, candidates = mingru_halves(projected)
    gate = torch.sigmoid(gates)
    values = gate * mingru_candidate(candidates, linear)  # out of place: also used under autograd
    if keep is not None:
        values = values * as_factor(keep, values)
    return mingru_coeffs(gate, keep), values


def as_factor(keep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (batch, seq_len) bool mask as a (batch, seq_len, 1, 1) factor of `like`'s dtype: multiplying by it takes a
    third of the time of masked_fill with the bool mask (one thread, 2.6M floats: 0.55 against 1.9 ms)."""
    return keep[:, :, None, None].to(like.dtype)


def mingru_halves(projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate and candidate inputs of a (batch, seq_len, directions, 2, width) projection, each copied contiguous:
    element-wise kernels on the strided halves run unvectorised (one thread, 2.6M floats: a sigmoid took 5.2 ms on
    a half, 0.6 ms on its copy, and the copy 0.3 ms)."""
    return tuple(half.contiguous() for half in projected.unbind(dim=3))


def mingru_coeffs(gate: torch.Tensor, keep: torch.Tensor | None, in_place: bool = False) -> torch.Tensor:
    """The coefficients 1 - z from the gate z = sigmoid(gates); 1 where `keep` is False. A subtraction instead of
    sigmoid(-gates), which costs two more passes: near z = 1 the coefficient's absolute error is a few units in the
    last place of 1 (about 1e-7 in fp32), beside terms z * g(h~) of order one; near z = 0, where a long memory
    lives, both are as precise as floats just under 1 can be. `in_place` writes them into `gate`."""
    coeffs = gate.neg_().add_(1) if in_place else 1 - gate
    if keep is None:
        return coeffs
    factor = as_factor(keep, coeffs)
    return coeffs.mul_(factor).add_(1 - factor)  # coeffs where kept, exactly 1 where carried


def mingru_states(
    projected: torch.Tensor, keep: torch.Tensor | None, initial: torch.Tensor | None, linear: bool = False
) -> torch.Tensor:
    """The states (batch, seq_len, directions, width) of a gate projection, without autograd: the terms of
    `mingru_terms` (the same floats) computed in place on the copies of the projection's halves, then `chunked_scan`
    of each direction in place, the second run from the last step (h_t depends on h_{t+1}); the candidate's copy
    ends up holding the states. One thread, one layer at 64 x 128, 4 x 2,048 and 1 x 8,192 tokens, medians of 6
    runs: 18-27 ms, against 30-59 ms out of place."""
    gates, candidates = mingru_halves(projected)
    gate = gates.sigmoid_()
    states = mingru_candidate(candidates, linear, in_place=True).mul_(gate)  # the added values, then the states
    if keep is not None:  # a carried step adds nothing
        states.mul_(as_factor(keep, states))
    coeffs = mingru_coeffs(gate, keep, in_place=True)
    for direction in range(states.shape[2]):
        start = None if initial is None else initial[:, direction]
        chunked_scan(coeffs[:, :, direction], states[:, :, direction], start, reverse=direction == 1, in_place=True)
    return states


class MinGRUScan(torch.autograd.Function):
    """minGRU's element-wise gates and candidate and its scan as one autograd node: it saves only the gate
    projection's output and the states, and backward recomputes the element-wise terms (per token and direction of
    width S, 2 x S + S values kept instead of about 6 x S: the sigmoids, the candidate, the terms and a concatenated
    copy of the output). Backward is the reverse scan of `LinearScan`, then the chain rule through the terms:
    d coeffs = g_t h_{t-1}; with z = sigmoid(gate), dL/d gate = z (1 - z) (g_t c - d coeffs), dL/d candidate input =
    g_t z c', where c is the candidate and c' its derivative (1 above 0, sigmoid' below)."""

    @staticmethod
    def forward(ctx, projected, initial, keep, linear):
        states = mingru_states(projected, keep, initial, linear)
        ctx.save_for_backward(projected, states, initial, keep)
        ctx.linear = linear
        return states

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_states):
        projected, states, initial, keep = ctx.saved_tensors
        gates, candidates = mingru_halves(projected)
        gate = torch.sigmoid(gates)  # z
        coeffs = mingru_coeffs(gate, keep)  # 1 - z (1 at a carried step, but its gradients are zeroed)
        grad_values = grad_states.clone(memory_format=torch.contiguous_format)  # scanned in place
        previous = torch.empty_like(states)
        for direction in range(states.shape[2]):
            reverse = direction == 1
            chunked_scan(
                shift_in(coeffs[:, :, direction], not reverse, 0.0),
                grad_values[:, :, direction],
                None,
                not reverse,
                in_place=True,
            )
            start = torch.zeros_like(states[:, 0, direction]) if initial is None else initial[:, direction]
            previous[:, :, direction] = shift_in(states[:, :, direction], reverse, start)
        if ctx.linear:  # c = the projection, c' = 1
            candidate, candidate_slope = candidates, None
        else:
            below = candidates.clamp(max=0)
            candidate_sigmoid = torch.sigmoid(below)
            candidate = candidate_sigmoid + candidates.clamp(min=0)
            # c' = sigmoid' below 0, 1 from 0 up: there sigmoid' of the clamped input is 0.25, and sign(below) + 1 is
            # 1 (sign and adds instead of a bool mask: masked_fill with `candidates >= 0` took 11 ms of 2.6M floats).
            candidate_slope = (candidate_sigmoid * (1 - candidate_sigmoid)).add_(below.sign_().add_(1), alpha=0.75)
        grad_values_gate = grad_values * gate
        grad_gates = grad_values_gate.mul(coeffs).mul_(candidate - previous)
        grad_candidates = grad_values_gate if candidate_slope is None else grad_values_gate.mul_(candidate_slope)
        if keep is not None:  # a carried step's terms are constants
            factor = as_factor(keep, grad_gates)
            grad_gates, grad_candidates = grad_gates.mul_(factor), grad_candidates.mul_(factor)
        grad_initial = None
        if initial is not None:
            edges = [coeffs[:, -1 if direction else 0, direction] * grad_values[:, -1 if direction else 0, direction]
                     for direction in range(states.shape[2])]  # fmt: skip
            grad_initial = torch.stack(edges, dim=1)
        return torch.stack([grad_gates, grad_candidates], dim=3), grad_initial, None, None


def shift_in(tensor: torch.Tensor, from_end: bool, fill) -> torch.Tensor:
    """`tensor` (batch, seq_len, ...) moved one step along time: each step takes its predecessor's value (its
    successor's with `from_end`), the step left open gets `fill` (a number or a (batch, ...) tensor)."""
    edge = torch.full_like(tensor[:, :1], fill) if not torch.is_tensor(fill) else fill.unsqueeze(1).to(tensor.dtype)
    return torch.cat([tensor[:, 1:], edge], dim=1) if from_end else torch.cat([edge, tensor[:, :-1]], dim=1)


def linear_scan(
    coeffs: torch.Tensor, values: torch.Tensor, initial_state: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """States of the diagonal linear recurrence h_t = coeffs_t * h_{t-1} + values_t over (batch, seq_len, dim)
    inputs, starting from `initial_state` (batch, dim) or zeros; `reverse` runs it from the last step back."""
    initial = values.new_zeros(values.shape[0], *values.shape[2:]) if initial_state is None else initial_state
    if torch.is_grad_enabled() and (coeffs.requires_grad or values.requires_grad or initial.requires_grad):
        return LinearScan.apply(coeffs, values, initial, reverse)
    return chunked_scan(coeffs, values, initial, reverse)


def gla_chunks(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    log_decay: torch.Tensor,
    initial: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention with a scalar decay per head (the `"gla"` cell), in chunkwise-parallel form.

    The recurrence over t, for each head: S_t = a_t S_{t-1} + k_t^T v_t (a dim x dim matrix), o_t = q_t S_t,
    with a_t = exp(log_decay_t) in (0, 1]. `query`, `key`, `value` are (batch, seq_len, heads, dim), `log_decay`
    (batch, seq_len, heads), `initial` (batch, heads, dim, dim) or None (zeros). Returns the outputs
    (batch, seq_len, heads, dim) and the state after the last step.

    Within each chunk of `chunk_size` steps the outputs are a masked, decayed attention (matrix products); the
    state entering each chunk comes from a scan across the chunks' own sums. Every decay factor is the exp of a
    difference of cumulative log-decays that is <= 0, so nothing overflows at any length. A step with key 0 and
    log-decay 0 leaves the state as it was: that is how padding is skipped. Chunks of 32 measured fastest (gla-rrl's
    layer, forward and backward of 8,192 tokens, one thread of a busy machine, at 512, 2,048 and 8,192 tokens per row:
    265-277 ms with 32, 262-310 with 16, 296-362 with 64).
    """
    batch, seq_len, heads, dim = query.shape
    chunk = min(chunk_size, seq_len)
    extra = -seq_len % chunk
    if extra:  # fill the last chunk with steps that change nothing
        query, key, value = (F.pad(tensor, (0, 0, 0, 0, 0, extra)) for tensor in (query, key, value))
        log_decay = F.pad(log_decay, (0, 0, 0, extra))
    chunks = (seq_len + extra) // chunk

    def split(tensor):  # (batch, time, heads, ...) -> (batch, heads, chunks, chunk, ...)
        tensor = tensor.view(batch, chunks, chunk, heads, *tensor.shape[3:])
        return tensor.movedim(3, 1)

    query, key, value, log_decay = split(query), split(key), split(value), split(log_decay)
    cumulative = log_decay.cumsum(-1)  # b_i: log of the decay from the chunk's start through step i
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=query.device).tril()
    within = (cumulative[..., :, None] - cumulative[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    outputs = (query @ key.transpose(-1, -2) * within) @ value
    # Each chunk's own contribution to the state at its end, and the decay of the state that enters it.
    to_end = (cumulative[..., -1:] - cumulative).exp()
    contributions = (key * to_end[..., None]).transpose(-1, -2) @ value  # (batch, heads, chunks, dim, dim)
    through = cumulative[..., -1].exp()  # (batch, heads, chunks)
    # The state is carried in fp32 at least (under autocast the matrix products above give bf16).
    state_dtype = torch.promote_types(query.dtype, torch.float32)
    flat = contributions.movedim(2, 1).reshape(batch, chunks, heads * dim * dim).to(state_dtype)
    coeffs = through.movedim(2, 1)[..., None].expand(batch, chunks, heads, dim * dim).reshape(flat.shape)
    start = None if initial is None else initial.reshape(batch, heads * dim * dim).to(state_dtype)
    ends = linear_scan(coeffs, flat, start).view(batch, chunks, heads, dim, dim).movedim(1, 2)
    first = ends.new_zeros(batch, heads, 1, dim, dim) if initial is None else start.view(batch, heads, 1, dim, dim)
    entering = torch.cat([first, ends[:, :, :-1]], dim=2)
    outputs = outputs + (query * cumulative.exp()[..., None]) @ entering
    outputs = outputs.movedim(1, 3).reshape(batch, chunks * chunk, heads, dim)[:, :seq_len]
    return outputs, ends[:, :, -1]


def run_torch_cell(cell: Callable, inputs, initial=None):
    """`cell(inputs, initial)` (an nn.RNNBase, or a one-step function of the same signature); under CPU autocast
    the cell runs in fp32 with autocast off. Autocast sends an LSTM to oneDNN's bf16 kernel, which CPUs without
    native bf16 (AVX2 only) lack ("could not create a primitive descriptor"), and a state carried over hundreds of
    steps in bf16 (8-bit mantissa) drifts anyway."""
    if not (inputs.data.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
        return cell(inputs, initial)
    if initial is not None:
        initial = tuple(part.float() for part in initial) if isinstance(initial, tuple) else initial.float()
    with torch.autocast("cpu", enabled=False):
        return cell(inputs.float(), initial)


def positions_from_mask(attention_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Position of each token = number of real tokens before it, so left padding does not shift positions."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)[:, -seq_len:]


def rotate_half(hidden_states: torch.Tensor) -> torch.Tensor:
    first, second = hidden_states.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# ---------------------------------------------------------------------------------------------------------------
# Sub-layers, in data-flow order
# ---------------------------------------------------------------------------------------------------------------


class RotaryPositions(nn.Module):
    """cos/sin tables of rotary position embeddings for given position ids."""

    def __init__(self, config: RecurrentTransformerConfig):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.rope_theta = config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        return 1.0 / (self.rope_theta**exponents)

    def forward(self, hidden_states: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(hidden_states.device)  # (batch, seq, head_dim/2)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(hidden_states.dtype), angles.sin().to(hidden_states.dtype)


class DecayProjection(nn.Linear):
    """gla's per-head decay logits: a linear layer of its own type, so that `_init_weights` finds it and spreads its
    bias over the heads (the mixer holding it has no parameters of its own, which transformers' initialisation of
    remote code skips)."""

    def __init__(self, input_size: int, num_directions: int, num_heads: int):
        super().__init__(input_size, num_directions * num_heads)
        self.num_directions, self.num_heads = num_directions, num_heads


class RecurrentMixer(nn.Module):
    """Recurrent sub-layer: a torch cell (fused kernels), minGRU (parallel scan) or gla (chunked matrix products),
    over the whole sequence or over each position's last `recurrent_window` tokens, in one or both directions.

    `forward(hidden_states, padding_mask, state)` returns the output and the new state. A state is a tuple of
    batch-first tensors: (h, c) for an LSTM, (h,) for GRU, RNN and minGRU (each (batch, directions, width)), (S,) for
    gla ((batch, directions, heads, dim, dim)), or, for a local window, the last `window - 1` inputs (batch,
    window - 1, hidden_size).
    """

    def __init__(self, config: RecurrentTransformerConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.cell_type = config.recurrent_cell
        self.window = config.recurrent_window
        self.num_directions = 2 if config.bidirectional else 1
        self.state_size = config.recurrent_hidden_size // self.num_directions
        input_size = config.hidden_size
        self.linear_candidate = config.mingru_candidate == "linear"
        if self.cell_type == "mingru":
            # Gates and candidate states of every direction from one projection.
            self.gate_proj = nn.Linear(input_size, 2 * self.num_directions * self.state_size)
        elif self.cell_type == "gla":
            # Query, key, value and output gate of every direction from one projection, the heads' decays from
            # another (its bias, set by `_init_weights`, spreads the heads' half-lives from 16 to 611 tokens).
            self.num_heads = config.num_attention_heads
            self.head_dim = self.state_size // self.num_heads
            self.qkvg_proj = nn.Linear(input_size, 4 * self.num_directions * self.state_size, bias=False)
            self.decay_proj = DecayProjection(input_size, self.num_directions, self.num_heads)
            self.head_norm = nn.RMSNorm(self.head_dim, eps=config.layer_norm_eps)
        elif self.window is None:
            self.cell = TORCH_CELLS[self.cell_type](
                input_size, self.state_size, batch_first=True, bidirectional=self.num_directions == 2
            )
        else:
            # The two directions see different windows, so each has its own cell.
            self.cells = nn.ModuleList(
                TORCH_CELLS[self.cell_type](input_size, self.state_size, batch_first=True)
                for _ in range(self.num_directions)
            )
        recurrent_size = self.num_directions * self.state_size
        # gla's heads are mixed by an output projection, as attention's are; the other cells need one only to
        # change the width.
        needs_projection = recurrent_size != config.hidden_size or self.cell_type == "gla"
        self.out_proj = nn.Linear(recurrent_size, config.hidden_size) if needs_projection else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, ...] | None = None,
        keep_state: bool = True,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The recurrence over `hidden_states` from `state` (None: the start), and its state after the last real
        token; without `keep_state` (no cache to write it to) a torch cell may return None for the latter."""
        if self.window is not None:
            output, new_state = self.local_window(hidden_states, padding_mask, state)
        elif self.cell_type == "mingru":
            output, new_state = self.mingru(hidden_states, padding_mask, state)
        elif self.cell_type == "gla":
            output, new_state = self.gla(hidden_states, padding_mask, state)
        elif padding_mask is not None and state is None and not keep_state and isinstance(self.cell, nn.RNNBase):
            # (A cell wrapped by PEFT's LoRA on its weights keeps the packed path, which calls the wrapper.)
            output, new_state = self.torch_cell_unpacked(hidden_states, padding_mask), None
        else:
            output, new_state = self.torch_cell(hidden_states, padding_mask, state)
        if self.out_proj is not None:
            output = self.out_proj(output)
        return output, new_state

    # -- whole sequence, torch cells ---------------------------------------------------------------------------
    def torch_cell(self, hidden_states, padding_mask, state):
        batch_size, seq_len, _ = hidden_states.shape
        if seq_len == 1 and self.num_directions == 1:
            return self.torch_cell_step(hidden_states, padding_mask, state)
        # Torch wants (directions, batch, width) states; ours are batch-first (beam search reorders dim 0).
        initial = None if state is None else tuple(part.transpose(0, 1).contiguous() for part in state)
        if initial is not None and self.cell_type != "lstm":
            initial = initial[0]
        if padding_mask is None:
            output, final = run_torch_cell(self.cell, hidden_states, initial)
        else:
            order, inverse, lengths = real_tokens_first(padding_mask)
            packed = nn.utils.rnn.pack_padded_sequence(
                gather_time(hidden_states, order), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
            )
            packed_output, final = run_torch_cell(self.cell, packed, initial)
            output, _ = nn.utils.rnn.pad_packed_sequence(packed_output, batch_first=True, total_length=seq_len)
            output = gather_time(output, inverse)
            if initial is not None:
                # A row with no real token keeps its state.
                empty = (lengths == 0).view(1, batch_size, 1)
                if self.cell_type == "lstm":
                    final = tuple(torch.where(empty, old, new) for old, new in zip(initial, final, strict=True))
                else:
                    final = torch.where(empty, initial, final)
        final = final if isinstance(final, tuple) else (final,)
        return output, tuple(part.transpose(0, 1) for part in final)

    def torch_cell_unpacked(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """The outputs of `torch_cell` on a padded batch without packing: each direction runs over the whole padded
        tensor with its real tokens moved in front of the padding (reversed for the backward direction), so the
        padding comes after every real token in the order the cell reads them and changes none of their outputs;
        only the final state, which is not returned, would differ. Packed sequences take torch's slow path on CPU
        (one thread, lstm-baseline, forward and backward of 4 x 2,048 tokens: 82 s with one row part padding, 2.4 s
        without padding; 2.3 s on this path)."""
        order, inverse, lengths = real_tokens_first(padding_mask)
        inputs = gather_time(hidden_states, order)  # right padding
        outputs = []
        for direction in range(self.num_directions):
            if direction == 0:
                outputs.append(self.one_direction(inputs, direction))
            else:
                backward_order = reversed_real_tokens(lengths, inputs.shape[1])
                outputs.append(gather_time(self.one_direction(gather_time(inputs, backward_order), 1), backward_order))
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        return gather_time(output, inverse)

    def one_direction(self, inputs: torch.Tensor, direction: int) -> torch.Tensor:
        """Outputs of one direction of `self.cell` (its weights `*_l0` or `*_l0_reverse`) read from the first step
        to the last, from a zero state."""
        suffix = "_reverse" if direction else ""
        weights = [
            getattr(self.cell, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        zeros = inputs.new_zeros(1, inputs.shape[0], self.state_size)
        initial = (zeros, zeros) if self.cell_type == "lstm" else zeros
        function = SEQUENCE_FUNCTIONS[self.cell_type]

        def run(sequence, start):
            # (input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
            return function(sequence, start, weights, True, 1, 0.0, self.training, False, True)

        return run_torch_cell(run, inputs, initial)[0]

    def torch_cell_step(self, hidden_states, padding_mask, state):
        """One token through the cell's step function (a decoding step); a masked token keeps the state."""
        inputs = hidden_states[:, 0]
        if state is None:
            zeros = inputs.new_zeros(inputs.shape[0], self.state_size)
            previous = (zeros, zeros) if self.cell_type == "lstm" else (zeros,)
        else:
            previous = tuple(part[:, 0] for part in state)
        cell, step = self.cell, STEP_FUNCTIONS[self.cell_type]
        weights = (cell.weight_ih_l0, cell.weight_hh_l0, cell.bias_ih_l0, cell.bias_hh_l0)
        new = run_torch_cell(
            lambda step_input, step_state: step(step_input, step_state, *weights),
            inputs,
            previous if self.cell_type == "lstm" else previous[0],
        )
        new = new if isinstance(new, tuple) else (new,)
        if padding_mask is not None:
            keep = padding_mask[:, :1]
            new = tuple(torch.where(keep, part, old.to(part.dtype)) for part, old in zip(new, previous, strict=True))
        return new[0].unsqueeze(1), tuple(part.unsqueeze(1) for part in new)

    # -- whole sequence, minGRU --------------------------------------------------------------------------------
    def project_gates(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The gate projection, (batch, seq_len, directions, 2, width) in fp32."""
        batch_size, seq_len, _ = hidden_states.shape
        return self.gate_proj(hidden_states).float().view(batch_size, seq_len, self.num_directions, 2, self.state_size)

    def mingru(self, hidden_states, padding_mask, state):
        batch_size, seq_len, _ = hidden_states.shape
        projected = self.project_gates(hidden_states)
        initial = None if state is None else state[0].float()
        if torch.is_grad_enabled() and (projected.requires_grad or (initial is not None and initial.requires_grad)):
            states = MinGRUScan.apply(projected, initial, padding_mask, self.linear_candidate)
        else:
            states = mingru_states(projected, padding_mask, initial, self.linear_candidate)
        # The backward direction's final state is at the first step.
        finals = torch.stack(
            [states[:, -1 if direction == 0 else 0, direction] for direction in range(states.shape[2])], 1
        )
        output = states.view(batch_size, seq_len, -1).to(hidden_states.dtype)
        return output, (finals,)

    # -- whole sequence, gated linear attention ---------------------------------------------------------------
    def gla(self, hidden_states, padding_mask, state):
        """Each direction's heads run `gla_chunks`; the backward direction over the time-reversed sequence. A padded
        step gets key 0 and decay 1, so it moves no state, wherever it sits."""
        projected, log_decay = self.project_gla(hidden_states)
        keep = None if padding_mask is None else padding_mask[..., None].to(projected.dtype)
        initial = None if state is None else state[0]
        outputs, finals = [], []
        for direction in range(self.num_directions):
            start = None if initial is None else initial[:, direction]
            output, final = self.gla_direction(
                projected[:, :, direction], log_decay[:, :, direction], keep, start, reverse=direction == 1
            )
            outputs.append(output)
            finals.append(final)
        return torch.cat(outputs, dim=-1).to(hidden_states.dtype), (torch.stack(finals, dim=1),)

    def project_gla(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query, key, value and output gate (batch, seq_len, directions, 4, width) and the heads' log-decays
        (batch, seq_len, directions, heads), in fp32. GLA's gate: log a = logsigmoid(z) / 16, which keeps the decay
        near 1 over the whole range of z."""
        batch_size, seq_len, _ = hidden_states.shape
        projected = self.qkvg_proj(hidden_states).float().view(batch_size, seq_len, self.num_directions, 4, -1)
        decay_logits = self.decay_proj(hidden_states).float().view(batch_size, seq_len, self.num_directions, -1)
        return projected, F.logsigmoid(decay_logits) / 16

    def gla_direction(self, projected, log_decay, keep, initial, reverse):
        """One direction's output (batch, seq_len, state_size), read from the last step back with `reverse`, and
        its final state (batch, heads, dim, dim); in fp32. `keep` (batch, seq_len, 1) zeroes padded steps' keys and
        log-decays."""
        batch_size, seq_len = projected.shape[:2]
        query, key, value, gate = projected.unbind(2)
        if keep is not None:
            key, log_decay = key * keep, log_decay * keep
        query, key, value = (
            tensor.reshape(batch_size, seq_len, self.num_heads, self.head_dim) for tensor in (query, key, value)
        )
        query = query * self.head_dim**-0.5
        if reverse:
            query, key, value, log_decay = (tensor.flip(1) for tensor in (query, key, value, log_decay))
        output, final = gla_chunks(query, key, value, log_decay, initial)
        if reverse:
            output = output.flip(1)
        output = self.head_norm(output.float()).reshape(batch_size, seq_len, self.state_size) * F.silu(gate)
        return output, final

    # -- local window (R-Transformer's LocalRNN) ---------------------------------------------------------------
    def local_window(self, hidden_states, padding_mask, state):
        """Each position's output is the recurrence over its last `window` real tokens (zeros before the start),
        run in parallel over positions by unfolding the windows into the batch."""
        batch_size, seq_len, hidden_size = hidden_states.shape
        inverse = None
        if padding_mask is not None:
            order, inverse, _ = real_tokens_first(padding_mask)
            hidden_states = gather_time(hidden_states, order) * gather_time(padding_mask[..., None], order)
        context = self.window - 1
        if state is None:
            history = hidden_states.new_zeros(batch_size, context, hidden_size)
        else:
            history = state[0].to(hidden_states.dtype)
        forward_input = torch.cat([history, hidden_states], dim=1)
        outputs = [self.run_windows(forward_input, direction=0, seq_len=seq_len)]
        if self.num_directions == 2:
            future = hidden_states.new_zeros(batch_size, context, hidden_size)
            backward_input = torch.cat([hidden_states, future], dim=1).flip(1)
            outputs.append(self.run_windows(backward_input, direction=1, seq_len=seq_len).flip(1))
        output = torch.cat(outputs, dim=-1)
        if inverse is not None:
            output = gather_time(output, inverse) * padding_mask[..., None]
        # The rolling state: the last window - 1 inputs (real tokens only, as they were compacted to the front).
        if padding_mask is None:
            new_history = forward_input[:, -context:]
        else:
            lengths = padding_mask.sum(dim=1)
            index = lengths[:, None] + torch.arange(context, device=lengths.device)[None]  # (batch, context)
            new_history = gather_time(forward_input, index)
        return output, (new_history,)

    def run_windows(self, padded_input, direction, seq_len):
        """Last step of the recurrence over every window of `self.window` consecutive rows of `padded_input`."""
        batch_size, _, hidden_size = padded_input.shape
        windows = padded_input.unfold(1, self.window, 1)  # (batch, seq_len, hidden, window)
        windows = windows.permute(0, 1, 3, 2).reshape(batch_size * seq_len, self.window, hidden_size)
        if self.cell_type == "mingru":
            coeffs, values = mingru_terms(self.project_gates(windows), None, self.linear_candidate)
            states = linear_scan(coeffs[:, :, direction], values[:, :, direction])
            last = states[:, -1].to(padded_input.dtype)
        elif self.cell_type == "gla":
            # Direction 1's windows arrive reversed already, so each window runs forward.
            projected, log_decay = self.project_gla(windows)
            output, _ = self.gla_direction(projected[:, :, direction], log_decay[:, :, direction], None, None, False)
            last = output[:, -1].to(padded_input.dtype)
        else:
            window_output, _ = run_torch_cell(self.cells[direction], windows)
            last = window_output[:, -1]
        return last.view(batch_size, seq_len, self.state_size)


class SelfAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface (eager, sdpa, flash, ...)."""

    def __init__(self, config: RecurrentTransformerConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = not config.bidirectional
        self.attention_dropout = config.attention_dropout
        self.sliding_window = config.sliding_window if config.layer_types[layer_idx] in SLIDING_LAYER_TYPES else None
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, _ = hidden_states.shape
        head_shape = (batch_size, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(head_shape).transpose(1, 2)  # (batch, heads, seq, head_dim)
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        if position_embeddings is not None:
            cos, sin = (table.unsqueeze(1) for table in position_embeddings)
            query = query * cos + rotate_half(query) * sin
            key = key * cos + rotate_half(key) * sin
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attend = functools.partial(
            attention_interface,
            self,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )
        if isinstance(attention_mask, LocalBands):
            attn_output, attn_weights = self.local_blocks(attend, query, key, value, attention_mask), None
        elif self.blockwise(query, key, attention_mask):
            attn_output, attn_weights = self.sliding_blocks(attend, query, key, value, attention_mask), None
        else:
            attn_output, attn_weights = attend(query, key, value, attention_mask)
        attn_output = attn_output.reshape(batch_size, seq_len, -1).contiguous()
        return self.o_proj(attn_output), attn_weights

    def blockwise(self, query, key, attention_mask) -> bool:
        """Whether a sliding-window layer attends block by block: with sdpa, for more than two windows of queries,
        given the dense (batch, 1, queries, keys) mask. sdpa with a mask computes every query-key pair; blocks of
        `sliding_window` queries only meet the keys their window reaches, 2 x window per query instead of all
        (torch.profiler, one thread, hybrid-sliding with window 256: sdpa took 2.7 s of a 5.7 s 4,096-token prefill
        with the dense mask, 0.23 s of 1.9 s in blocks)."""
        return (
            self.sliding_window is not None
            and self.is_causal  # an encoder's sliding layers attend in `local_blocks`
            and self.config._attn_implementation == "sdpa"
            and query.shape[2] > 2 * self.sliding_window
            and attention_mask is not None
            and attention_mask.ndim == 4
            and attention_mask.shape[-2:] == (query.shape[2], key.shape[2])
        )

    def sliding_blocks(self, attend, query, key, value, attention_mask) -> torch.Tensor:
        """Sliding-window attention over blocks of queries, each with the keys its window can reach. The mask's
        last query row is the last key column; a query's window is the `sliding_window` keys ending at its own."""
        window, num_queries, num_keys = self.sliding_window, query.shape[2], key.shape[2]
        offset = num_keys - num_queries  # keys held before the first query (the cache's part)
        outputs = []
        for start in range(0, num_queries, window):
            end = min(start + window, num_queries)
            first_key = max(0, offset + start - window + 1)
            last_key = offset + end
            block, _ = attend(
                query[:, :, start:end],
                key[:, :, first_key:last_key],
                value[:, :, first_key:last_key],
                attention_mask[:, :, start:end, first_key:last_key],
            )
            outputs.append(block)  # (batch, queries, heads, head_dim)
        return torch.cat(outputs, dim=1)

    def local_blocks(self, attend, query, key, value, bands: "LocalBands") -> torch.Tensor:
        """Bidirectional sliding-window attention in blocks of `sliding_window` queries, each with the keys at most
        `sliding_window` positions away (3 x window keys per block), and a (queries x keys) mask built per block
        from the padding: no (seq x seq) mask exists, so time and memory grow linearly with length. A padded query
        attends its whole band (its output is never read), which keeps every row finite."""
        window, seq_len = self.sliding_window, query.shape[2]
        # Slices of the transposed projections would be copied by every block's kernel, each key into up to three
        # blocks; one contiguous copy first (measured: 61 instead of 77 MiB for a 4 x 2,048-token layer).
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
        positions = torch.arange(seq_len, device=query.device)
        outputs = []
        for start in range(0, seq_len, window):
            end, first_key = min(start + window, seq_len), max(0, start - window)
            last_key = min(seq_len, end + window)
            mask = (positions[start:end, None] - positions[None, first_key:last_key]).abs() <= window
            mask = mask[None, None]  # (1, 1, queries, keys)
            if bands.padding is not None:
                real_keys = bands.padding[:, None, None, first_key:last_key]
                padded_queries = ~bands.padding[:, None, start:end, None]
                mask = (mask & real_keys) | padded_queries
            if self.config._attn_implementation != "sdpa":  # the eager path adds its mask to the scores
                mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                    ~mask, torch.finfo(query.dtype).min
                )
            block, _ = attend(
                query[:, :, start:end], key[:, :, first_key:last_key], value[:, :, first_key:last_key], mask
            )
            outputs.append(block)  # (batch, queries, heads, head_dim)
        return torch.cat(outputs, dim=1)


@dataclass
class LocalBands:
    """What a bidirectional sliding-window layer attends with instead of a dense mask: the (batch, seq) padding mask
    (True = real token; None without padding). `SelfAttention.local_blocks` builds each block's band from it."""

    padding: torch.Tensor | None


class DropoutAdd(torch.autograd.Function):
    """residual + dropout(update) as one autograd node that keeps only the bool mask of the kept entries (torch's
    dropout keeps a mask of the update's own dtype: 4 bytes per entry in fp32, 8 MiB per sub-layer for 8,192 tokens
    of width 256)."""

    @staticmethod
    def forward(ctx, residual, update, p):
        keep = torch.rand(update.shape, device=update.device) >= p
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.addcmul(residual, update, keep, value=ctx.scale)  # 1.3 ms for 8,192 x 256, masked_fill 3.5

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (keep,) = ctx.saved_tensors
        return grad_output, grad_output.mul(keep).mul_(ctx.scale), None


class FeedForward(nn.Module):
    def __init__(self, config: RecurrentTransformerConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class RecurrentTransformerLayer(GradientCheckpointingLayer):
    def __init__(self, config: RecurrentTransformerConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        kind = config.layer_types[layer_idx]
        has_recurrence, has_attention = kind in RECURRENT_LAYER_TYPES, kind in ATTENTION_LAYER_TYPES
        eps = config.layer_norm_eps
        self.recurrent_norm = nn.LayerNorm(config.hidden_size, eps=eps) if has_recurrence else None
        self.recurrent = RecurrentMixer(config, layer_idx) if has_recurrence else None
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=eps) if has_attention else None
        self.attention = SelfAttention(config, layer_idx) if has_attention else None
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=eps) if config.intermediate_size else None
        self.feed_forward = FeedForward(config) if config.intermediate_size else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_norm = config.norm_placement == "post"
        # Per-channel scale of the recurrence's output (ReZero / LayerScale); set by `_init_weights`.
        self.recurrent_gate = (
            nn.Parameter(torch.empty(config.hidden_size)) if has_recurrence and config.recurrent_gate else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if self.recurrent is not None:
            state = read_recurrent_state(cache, self.layer_idx, self.recurrent)
            recurrent_output, new_state = self.recurrent(
                self.recurrent_norm(hidden_states), padding_mask, state, keep_state=cache is not None
            )
            write_recurrent_state(cache, self.layer_idx, self.recurrent, new_state)
            if self.recurrent_gate is not None:
                recurrent_output = recurrent_output * self.recurrent_gate.to(recurrent_output.dtype)
            # Pre-norm in both placements: a post-norm here would renormalise the residual stream even at gate 0.
            hidden_states = self.add_dropped(hidden_states, recurrent_output)
        if self.attention is not None:
            hidden_states = self.residual(
                hidden_states,
                self.attention_norm,
                lambda normed: self.attention(normed, attention_mask, position_embeddings, cache=cache, **kwargs)[0],
            )
        if self.feed_forward is not None:
            hidden_states = self.residual(hidden_states, self.feed_forward_norm, self.feed_forward)
        return hidden_states

    def residual(self, hidden_states: torch.Tensor, norm: nn.Module, sublayer: Callable) -> torch.Tensor:
        """Pre-norm h + dropout(f(norm(h))), or BERT's post-norm norm(h + dropout(f(h)))."""
        if self.post_norm:
            return norm(self.add_dropped(hidden_states, sublayer(hidden_states)))
        return self.add_dropped(hidden_states, sublayer(norm(hidden_states)))

    def add_dropped(self, residual: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """residual + dropout(update), in training through `DropoutAdd`, which keeps a one-byte mask."""
        if not self.training or self.dropout.p == 0:
            return residual + update
        return DropoutAdd.apply(residual, update, self.dropout.p)


def read_recurrent_state(cache: Cache | None, layer_idx: int, mixer: RecurrentMixer) -> tuple | None:
    """The layer's state from transformers' cache, or None at the start of a sequence.

    A local window keeps its last inputs as the layer's `conv_states[0]`; a cell keeps h (and c) as
    `recurrent_states[i]`. `has_previous_state` marks a written slot (the cache's own flag is only set by
    `update_conv_state`, so a pure recurrent state would otherwise be dropped).
    """
    if cache is None:
        return None
    layer = cache.layers[layer_idx]
    if not layer.has_previous_state[0]:
        return None
    if mixer.window is not None:
        return (layer.conv_states[0].transpose(1, 2),)  # stored (batch, hidden, window - 1): conv layout
    return tuple(layer.recurrent_states[i] for i in range(len(layer.recurrent_states)) if layer.has_previous_state[i])


def write_recurrent_state(cache: Cache | None, layer_idx: int, mixer: RecurrentMixer, state: tuple) -> None:
    if cache is None:
        return
    layer = cache.layers[layer_idx]
    if mixer.window is not None:
        history = state[0].transpose(1, 2)  # (batch, hidden, window - 1)
        if not layer.is_conv_states_initialized[0]:
            layer.lazy_initialization(conv_states=history, state_idx=0)
        layer.conv_states[0].copy_(history)
        layer.has_previous_state[0] = True
        return
    for state_idx, part in enumerate(state):
        layer.update_recurrent_state(part.detach() if not torch.is_grad_enabled() else part, state_idx=state_idx)
        layer.has_previous_state[state_idx] = True


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class RecurrentTransformerPreTrainedModel(PreTrainedModel):
    config: RecurrentTransformerConfig
    config_class = RecurrentTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RecurrentTransformerLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    _is_stateful = True
    _can_compile_fullgraph = False
    _can_record_outputs = {"hidden_states": RecurrentTransformerLayer, "attentions": SelfAttention}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
            for name, param in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(param)
                elif "bias_ih" in name and isinstance(module, nn.LSTM):
                    # Forget-gate bias 1 (Jozefowicz et al. 2015): the state is kept by default early in training.
                    bias = torch.zeros_like(param)
                    bias[module.hidden_size : 2 * module.hidden_size] = 1.0
                    init.copy_(param, bias)
                else:
                    init.zeros_(param)
        elif isinstance(module, DecayProjection):
            # The heads' decay biases from 0 to 4: a = sigmoid(bias)^(1/16) per token keeps half the state over
            # 16 to 611 tokens at the start, short and long memories side by side.
            spread = torch.linspace(0.0, 4.0, module.num_heads).repeat(module.num_directions)
            init.copy_(module.bias, spread)
        elif isinstance(module, RotaryPositions):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif isinstance(module, RecurrentTransformerLayer) and module.recurrent_gate is not None:
            init.constant_(module.recurrent_gate, self.config.recurrent_gate_init)

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        loading_info = PreTrainedModel._finalize_model_loading(model, load_config, loading_info)
        # Weights loaded from safetensors can sit at unaligned addresses, and torch's CPU kernel for packed
        # sequences then rounds differently (1e-7): give the cells their own aligned copies, so a reloaded model
        # reproduces the saved one bit for bit.
        for module in model.modules():
            if isinstance(module, nn.RNNBase):
                with torch.no_grad():
                    for param in module.parameters():
                        param.data = param.data.clone()
                module._init_flat_weights()
        return loading_info


class RecurrentTransformerModel(RecurrentTransformerPreTrainedModel):
    def __init__(self, config: RecurrentTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_positions = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.rotary = RotaryPositions(config) if config.position_embedding_type == "rope" else None
        self.embed_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.embedding_norm else None
        self.embed_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(RecurrentTransformerLayer(config, i) for i in range(config.num_hidden_layers))
        # A post-norm stack already ends normalised.
        self.norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            if config.norm_placement == "pre"
            else nn.Identity()
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def check_input_ids(self, input_ids: torch.Tensor) -> None:
        """A clear error instead of an index error from inside torch (skipped while compiling)."""
        if torch.compiler.is_compiling() or input_ids.numel() == 0:
            return
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(
                f"input_ids hold token ids in [{low}, {high}] but the model's vocab_size is {self.config.vocab_size}: "
                "was the tokenizer changed without resizing the embeddings (model.resize_token_embeddings)?"
            )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @deprecate_kwarg("cache_params", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            self.check_input_ids(input_ids)
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len, _ = inputs_embeds.shape
        if self.config.bidirectional:
            use_cache, cache = False, None  # an encoder has nothing to continue from
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cached_length(cache)

        if attention_mask is not None and attention_mask.ndim == 2 and attention_mask.shape[1] != past_length + seq_len:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} columns; expected {past_length + seq_len} "
                f"({past_length} cached + {seq_len} new tokens)"
            )
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2:
                position_ids = positions_from_mask(attention_mask, seq_len)
            else:
                position_ids = torch.arange(past_length, past_length + seq_len, device=inputs_embeds.device)[None]

        hidden_states = inputs_embeds
        if self.embed_positions is not None:
            if not torch.compiler.is_compiling() and int(position_ids.max()) >= self.config.max_position_embeddings:
                raise ValueError(
                    f"position {int(position_ids.max())} is beyond max_position_embeddings="
                    f"{self.config.max_position_embeddings} of the learned absolute positions: shorten the input "
                    "(keep the last max_position_embeddings tokens)"
                )
            hidden_states = hidden_states + self.embed_positions(position_ids)
        if self.embed_norm is not None:
            hidden_states = self.embed_norm(hidden_states)
        hidden_states = self.embed_dropout(hidden_states)
        position_embeddings = self.rotary(hidden_states, position_ids) if self.rotary is not None else None

        # The recurrence's mask: real tokens among the new ones; None when there is no padding (the fast path).
        padding_mask = None
        if attention_mask is not None and attention_mask.ndim == 2:
            new_tokens = attention_mask[:, -seq_len:].bool()
            if not bool(new_tokens.all()):
                padding_mask = new_tokens
        attention_masks = self.attention_masks(inputs_embeds, attention_mask, cache, position_ids)

        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_masks.get(self.config.layer_types[layer.layer_idx]),
                padding_mask=padding_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        if cache is not None:
            cache.recurrent_transformer_seen_tokens = past_length + seq_len
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)

    def attention_masks(self, inputs_embeds, attention_mask, cache, position_ids) -> dict:
        """One attention mask per attention layer kind, built by transformers' masking utilities."""
        kinds = set(self.config.layer_types)
        if not kinds & set(ATTENTION_LAYER_TYPES):
            return {}
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "cache": cache,
            "position_ids": position_ids,
        }
        sliding = kinds & set(SLIDING_LAYER_TYPES)
        if self.config.bidirectional:
            mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
            )
            masks = dict.fromkeys(kinds - sliding, mask)
            if sliding:
                masks.update(dict.fromkeys(sliding, self.bidirectional_sliding_mask(inputs_embeds, attention_mask)))
            return masks
        masks = dict.fromkeys(kinds - sliding, create_causal_mask(**mask_kwargs))
        if sliding:
            masks.update(dict.fromkeys(sliding, create_sliding_window_causal_mask(**mask_kwargs)))
        return masks

    def bidirectional_sliding_mask(self, inputs_embeds, attention_mask):
        """For eager and sdpa beyond two windows, `LocalBands` (the layer attends block by block, no dense mask);
        otherwise transformers' dense bidirectional sliding-window mask."""
        seq_len = inputs_embeds.shape[1]
        if seq_len <= self.config.sliding_window + 1:  # every token is within the window of every other one
            return create_bidirectional_mask(
                config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
            )
        blockwise = self.config._attn_implementation in ("sdpa", "eager") and seq_len > 2 * self.config.sliding_window
        if blockwise and (attention_mask is None or attention_mask.ndim == 2):
            padding = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
            return LocalBands(padding)
        return create_bidirectional_sliding_window_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )


def cached_length(cache: Cache | None) -> int:
    """Tokens the cache has seen. `Cache.get_seq_length()` raises when no layer holds attention, so the model
    keeps its own count on the cache object."""
    if cache is None:
        return 0
    return getattr(cache, "recurrent_transformer_seen_tokens", 0)


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """One vector per sequence from its real tokens (found from `attention_mask`, never from pad ids)."""
    batch_size, seq_len, _ = hidden_states.shape
    if attention_mask is None:
        attention_mask = hidden_states.new_ones(batch_size, seq_len)
    mask = attention_mask[:, -seq_len:].to(hidden_states.dtype)
    if mode == "mean":
        return (hidden_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    positions = torch.arange(seq_len, device=hidden_states.device)
    if mode == "first":
        index = torch.where(mask.bool(), positions, seq_len).min(dim=1).values.clamp(max=seq_len - 1)
    else:
        index = torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)
    return hidden_states[torch.arange(batch_size, device=hidden_states.device), index]


class RecurrentTransformerForSequenceClassification(RecurrentTransformerPreTrainedModel):
    def __init__(self, config: RecurrentTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RecurrentTransformerModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if config.classifier_pooler else None
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @property
    def pooling(self) -> str:
        if self.config.classifier_pooling != "auto":
            return self.config.classifier_pooling
        return "mean" if self.config.bidirectional else "last"

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        outputs = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
        )  # fmt: skip
        pooled = pool(outputs.last_hidden_state, attention_mask, self.pooling)
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(pooled))  # BERT's pooler; RoBERTa's classification dense
        logits = self.score(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class RecurrentTransformerForTokenClassification(RecurrentTransformerPreTrainedModel):
    def __init__(self, config: RecurrentTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = RecurrentTransformerModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
        )  # fmt: skip
        logits = self.score(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class RecurrentTransformerForMaskedLM(RecurrentTransformerPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: RecurrentTransformerConfig):
        if not config.bidirectional:
            raise ValueError(
                "RecurrentTransformerForMaskedLM needs bidirectional=True: a masked-LM sees both sides of each "
                "token (use RecurrentTransformerForCausalLM for a causal body)"
            )
        super().__init__(config)
        self.model = RecurrentTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        outputs = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        hidden_states = outputs.last_hidden_state
        if self.config.sparse_prediction and labels is not None:
            # Only the masked tokens are scored: with 15 % masked, scoring every token made a forward and backward
            # pass 2.1-2.2x as long (lstm-rrrl-noffn, 16,000 pieces, 16 x 512 and 4 x 2,048 tokens, one thread).
            labelled = labels != -100
            hidden_states, labels = hidden_states[labelled], labels[labelled]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class RecurrentTransformerForCausalLM(RecurrentTransformerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: RecurrentTransformerConfig):
        if config.bidirectional:
            raise ValueError(
                "RecurrentTransformerForCausalLM needs bidirectional=False: a causal language model must not see "
                "the tokens it predicts (use RecurrentTransformerForMaskedLM for a bidirectional body)"
            )
        super().__init__(config)
        self.model = RecurrentTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @deprecate_kwarg("cache_params", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs,
        )  # fmt: skip
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "RecurrentTransformerPreTrainedModel",
    "RecurrentTransformerModel",
    "RecurrentTransformerForSequenceClassification",
    "RecurrentTransformerForTokenClassification",
    "RecurrentTransformerForMaskedLM",
    "RecurrentTransformerForCausalLM",
]
