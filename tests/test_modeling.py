"""Model behaviour: exact padding, the minGRU scan, the gla chunks, gradients, attention back-ends, checkpointing,
input checks."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import CELLS, LAYER_TYPES, SLIDING, padded_batch, randomize_biases, tiny_config

from recurrent_transformer import (
    RecurrentTransformerConfig,
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
)
from recurrent_transformer.modeling_recurrent_transformer import (
    MinGRUScan,
    RecurrentMixer,
    chunked_scan,
    gla_chunks,
    linear_scan,
    mingru_terms,
    scan_rounds,
)
from recurrent_transformer.presets import available_presets, load_preset

LENGTHS = (7, 4, 5)


def padding_cases():
    """Every cell x layer type x direction x window; attention-only layers have no cell, so one case each."""
    for layer_type, bidirectional, window, positions in itertools.product(
        LAYER_TYPES, (True, False), (None, 3), ("none", "absolute", "rope")
    ):
        has_recurrence = layer_type not in ("full_attention", "sliding_attention")
        if not has_recurrence and window is not None:
            continue
        if positions != "none" and layer_type == "linear_attention":
            continue
        for cell in CELLS if has_recurrence else ("lstm",):
            yield pytest.param(
                cell,
                layer_type,
                bidirectional,
                window,
                positions,
                id=f"{cell}-{layer_type}-{'bi' if bidirectional else 'causal'}-w{window}-{positions}",
            )


@pytest.mark.parametrize("cell,layer_type,bidirectional,window,positions", list(padding_cases()))
def test_padding_is_exact(cell, layer_type, bidirectional, window, positions):
    torch.manual_seed(0)
    config = tiny_config(
        recurrent_cell=cell,
        layer_pattern=layer_type,
        bidirectional=bidirectional,
        recurrent_window=window,
        position_embedding_type=positions,
        # A window of 2 keeps the 7-token rows longer than two windows: the encoder attends block by block.
        sliding_window=2 if layer_type in SLIDING else None,
    )
    assert_padded_rows_equal_rows_alone(RecurrentTransformerModel(config).eval(), sides=("right", "left"))


def assert_padded_rows_equal_rows_alone(model, sides):
    """Rows of LENGTHS random tokens, each alone and in a batch padded on each side: equal real positions (1e-5)."""
    randomize_biases(model)
    sequences = [torch.randint(1, model.config.vocab_size, (length,)) for length in LENGTHS]
    with torch.no_grad():
        alone = [model(seq[None]).last_hidden_state[0] for seq in sequences]
        for side in sides:
            input_ids, attention_mask = padded_batch(sequences, side)
            batched = model(input_ids, attention_mask=attention_mask).last_hidden_state
            for row, expected in enumerate(alone):
                real = attention_mask[row].bool()
                torch.testing.assert_close(batched[row, real], expected, atol=1e-5, rtol=1e-5, msg=f"{side} row {row}")


@pytest.mark.parametrize("name", available_presets())
def test_every_shipped_preset_shrunk_is_exact_under_padding(name):
    """Each preset's own layout, cell and feed-forward choice (some have none) at test size: the grid above builds
    one layer type at a time with a feed-forward sub-layer, a preset mixes them."""
    shipped = load_preset(name)
    config = load_preset(
        name,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64 if shipped.intermediate_size else 0,
        recurrent_hidden_size=32,
        sliding_window=2 if shipped.sliding_window else None,
        recurrent_window=3 if shipped.recurrent_window else None,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = RecurrentTransformerModel(config).eval()
    assert_padded_rows_equal_rows_alone(model, sides=("right" if config.bidirectional else "left",))


def mingru_reference(mixer: RecurrentMixer, hidden_states, padding_mask):
    """Step-by-step minGRU in float64: h_t = (1 - z_t) h_{t-1} + z_t g(k_t); a masked step keeps h."""
    weight, bias = mixer.gate_proj.weight.double(), mixer.gate_proj.bias.double()
    batch_size, seq_len, _ = hidden_states.shape
    projected = F.linear(hidden_states.double(), weight, bias).view(
        batch_size, seq_len, mixer.num_directions, 2, mixer.state_size
    )
    outputs = []
    for direction in range(mixer.num_directions):
        steps = range(seq_len) if direction == 0 else reversed(range(seq_len))
        state = hidden_states.new_zeros(batch_size, mixer.state_size, dtype=torch.float64)
        per_step = [None] * seq_len
        for t in steps:
            gate = torch.sigmoid(projected[:, t, direction, 0])
            raw = projected[:, t, direction, 1]
            candidate = raw if mixer.linear_candidate else torch.where(raw >= 0, raw + 0.5, torch.sigmoid(raw))
            new_state = (1 - gate) * state + gate * candidate
            state = torch.where(padding_mask[:, t, None], new_state, state)
            per_step[t] = state
        outputs.append(torch.stack(per_step, dim=1))
    return torch.cat(outputs, dim=-1)


@pytest.mark.parametrize("candidate", ["positive", "linear"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_mingru_scan_matches_step_by_step_reference(bidirectional, candidate):
    torch.manual_seed(0)
    config = tiny_config(
        recurrent_cell="mingru", bidirectional=bidirectional, recurrent_hidden_size=32, mingru_candidate=candidate
    )
    mixer = RecurrentMixer(config, layer_idx=0)
    randomize_biases(mixer)
    seq_len = 1100
    hidden_states = torch.randn(2, seq_len, config.hidden_size, requires_grad=True)
    padding_mask = torch.ones(2, seq_len, dtype=torch.bool)
    padding_mask[1, :75] = False  # left padding
    output, _ = mixer(hidden_states, padding_mask)
    expected = mingru_reference(mixer, hidden_states, padding_mask)
    real = padding_mask
    torch.testing.assert_close(output[real].double(), expected[real], atol=1e-5, rtol=1e-5)

    weights = torch.randn_like(expected) * real[..., None]
    grads = torch.autograd.grad((output * weights).sum(), [hidden_states, mixer.gate_proj.weight])
    expected_grads = torch.autograd.grad((expected * weights.double()).sum(), [hidden_states, mixer.gate_proj.weight])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert torch.isfinite(grad).all()
        scale = expected_grad.abs().max()
        torch.testing.assert_close(grad.double() / scale, expected_grad.double() / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unpacked_torch_cell_equals_the_packed_one_on_real_tokens(cell, bidirectional):
    """Without a cache to write a final state to, a padded batch runs each direction unpacked (real tokens moved in
    front of the padding, reversed for the backward direction) instead of as packed sequences; outputs and gradients
    on real tokens equal the packed path's, with right, left and inner padding and a row with no real token."""
    torch.manual_seed(0)
    config = tiny_config(recurrent_cell=cell, bidirectional=bidirectional, recurrent_hidden_size=16)
    mixer = RecurrentMixer(config, layer_idx=0).train()
    randomize_biases(mixer)
    hidden_states = torch.randn(5, 13, config.hidden_size, requires_grad=True)
    padding_mask = torch.ones(5, 13, dtype=torch.bool)
    padding_mask[1, 9:] = False  # right padding
    padding_mask[2, :4] = False  # left padding
    padding_mask[3, 5:7] = False  # a hole
    padding_mask[4] = False  # nothing real
    packed, state = mixer(hidden_states, padding_mask, keep_state=True)
    unpacked, no_state = mixer(hidden_states, padding_mask, keep_state=False)
    assert state is not None and no_state is None
    torch.testing.assert_close(unpacked[padding_mask], packed[padding_mask], atol=1e-6, rtol=1e-6)
    weights = torch.randn_like(packed) * padding_mask[..., None]
    parameters = [hidden_states, *mixer.cell.parameters()]
    expected = torch.autograd.grad((packed * weights).sum(), parameters)
    grads = torch.autograd.grad((unpacked * weights).sum(), parameters)
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_mingru_left_padding_gives_finite_gradients():
    torch.manual_seed(0)
    model = RecurrentTransformerForSequenceClassification(tiny_config(recurrent_cell="mingru", num_labels=3))
    input_ids = torch.randint(1, 64, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :6] = 0
    model(input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 2])).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), name


HEADS_BIDIRECTIONAL = (
    RecurrentTransformerModel,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerForMaskedLM,
)
HEADS_CAUSAL = (
    RecurrentTransformerModel,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerForCausalLM,
)


def head_loss(model, input_ids, attention_mask):
    outputs = model(input_ids, attention_mask=attention_mask)
    if isinstance(model, RecurrentTransformerModel):
        return outputs.last_hidden_state.pow(2).mean()
    return outputs.logits.pow(2).mean()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_gradients_reach_every_parameter(cell, bidirectional):
    torch.manual_seed(0)
    for window in (None, 3):
        config = tiny_config(
            recurrent_cell=cell,
            bidirectional=bidirectional,
            recurrent_window=window,
            layer_pattern="HAR",
            num_hidden_layers=3,
            position_embedding_type="absolute",
            recurrent_hidden_size=16,  # adds the output projection
            num_labels=3,
        )
        for head in HEADS_BIDIRECTIONAL if bidirectional else HEADS_CAUSAL:
            model = head(config)
            input_ids = torch.randint(1, config.vocab_size, (2, 6))
            attention_mask = torch.ones_like(input_ids)
            attention_mask[0, 4:] = 0
            head_loss(model, input_ids, attention_mask).backward()
            missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
            assert not missing, f"{head.__name__} ({cell}, window={window}): no gradient for {missing}"


def test_sparse_prediction_scores_only_the_masked_tokens():
    """sparse_prediction changes what is computed, not the loss or its gradients; without labels it changes nothing."""
    torch.manual_seed(0)
    dense = RecurrentTransformerForMaskedLM(tiny_config())
    sparse = RecurrentTransformerForMaskedLM(tiny_config(sparse_prediction=True))
    sparse.load_state_dict(dense.state_dict())
    input_ids, attention_mask = padded_batch([torch.randint(1, 64, (n,)) for n in (9, 5, 7)], "right")
    labels = torch.full_like(input_ids, -100)
    masked = (torch.rand(input_ids.shape) < 0.3) & attention_mask.bool()
    labels[masked] = input_ids[masked]
    outputs = [model(input_ids, attention_mask=attention_mask, labels=labels) for model in (dense, sparse)]
    assert outputs[1].logits.shape == (int(masked.sum()), dense.config.vocab_size)
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits[masked], rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss, rtol=0, atol=1e-6)
    for output in outputs:
        output.loss.backward()
    for (name, param), other in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(other.grad, param.grad, rtol=0, atol=1e-6, msg=name)
    unlabelled = sparse(input_ids, attention_mask=attention_mask).logits
    assert unlabelled.shape == (*input_ids.shape, dense.config.vocab_size)


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    for bidirectional in (True, False):
        config = tiny_config(bidirectional=bidirectional, position_embedding_type="rope")
        eager = RecurrentTransformerModel(config).eval()
        eager.set_attn_implementation("eager")
        sdpa = RecurrentTransformerModel(config).eval()
        sdpa.set_attn_implementation("sdpa")
        sdpa.load_state_dict(eager.state_dict())
        input_ids = torch.randint(1, config.vocab_size, (3, 8))
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, :3] = 0
        attention_mask[1, 6:] = 0
        with torch.no_grad():
            expected = eager(input_ids, attention_mask=attention_mask).last_hidden_state
            actual = sdpa(input_ids, attention_mask=attention_mask).last_hidden_state
        real = attention_mask.bool()
        torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_activation_checkpointing_gives_same_gradients(cell):
    torch.manual_seed(0)
    config = tiny_config(recurrent_cell=cell, num_labels=3)
    model = RecurrentTransformerForSequenceClassification(config).train()
    input_ids = torch.randint(1, config.vocab_size, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0
    labels = torch.tensor([1, 2])

    def gradients():
        model.zero_grad()
        model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.model.layers[0].gradient_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("padded", [True, False])
def test_bf16_autocast_gives_finite_loss(cell, window, padded):
    """Unpadded batches take the cells' fast path, which autocast once sent to a bf16 LSTM kernel that CPUs
    without native bf16 lack; padded ones take packed sequences."""
    torch.manual_seed(0)
    model = RecurrentTransformerForSequenceClassification(
        tiny_config(recurrent_cell=cell, recurrent_window=window, num_labels=3)
    )
    input_ids = torch.randint(1, 64, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    if padded:
        attention_mask[0, :3] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1])).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_input_ids_outside_vocabulary_give_clear_error():
    model = RecurrentTransformerModel(tiny_config())
    with pytest.raises(ValueError, match="vocab_size is 64"):
        model(torch.tensor([[1, 2, 64]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 2]]))


def test_heads_refuse_the_wrong_direction():
    with pytest.raises(ValueError, match="bidirectional=True"):
        RecurrentTransformerForMaskedLM(tiny_config(bidirectional=False))
    with pytest.raises(ValueError, match="bidirectional=False"):
        RecurrentTransformerForCausalLM(tiny_config(bidirectional=True))


@pytest.mark.parametrize(
    "problem_type,num_labels,labels",
    [
        ("single_label_classification", 3, torch.tensor([0, 2])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", 1, torch.tensor([0.5, -1.0])),
    ],
)
def test_sequence_classification_problem_types(problem_type, num_labels, labels):
    torch.manual_seed(0)
    config = tiny_config(num_labels=num_labels, problem_type=problem_type)
    model = RecurrentTransformerForSequenceClassification(config)
    outputs = model(torch.randint(1, 64, (2, 5)), labels=labels)
    assert outputs.logits.shape == (2, num_labels)
    assert torch.isfinite(outputs.loss) and outputs.loss > 0


@pytest.mark.parametrize("bidirectional,pooling", [(True, "mean"), (True, "first"), (False, "last")])
def test_pooling_uses_attention_mask(bidirectional, pooling):
    """The pooled vector of a padded row equals that of the unpadded row, whatever the pad id."""
    torch.manual_seed(0)
    config = tiny_config(bidirectional=bidirectional, classifier_pooling=pooling, num_labels=2, pad_token_id=5)
    model = RecurrentTransformerForSequenceClassification(config).eval()
    sequence = torch.tensor([[7, 8, 9, 10]])
    for padded, mask in (
        (torch.tensor([[5, 5, 7, 8, 9, 10]]), torch.tensor([[0, 0, 1, 1, 1, 1]])),
        (torch.tensor([[7, 8, 9, 10, 5, 5]]), torch.tensor([[1, 1, 1, 1, 0, 0]])),
    ):
        with torch.no_grad():
            torch.testing.assert_close(
                model(padded, attention_mask=mask).logits, model(sequence).logits, atol=1e-5, rtol=1e-5
            )


def test_recurrent_state_continues_the_sequence():
    """The recurrent sub-layer takes a state in and returns one: two halves equal one pass."""
    torch.manual_seed(0)
    for cell, window in itertools.product(CELLS, (None, 3)):
        config = tiny_config(recurrent_cell=cell, bidirectional=False, recurrent_window=window)
        mixer = RecurrentMixer(config, layer_idx=0)
        randomize_biases(mixer)
        hidden_states = torch.randn(2, 10, config.hidden_size)
        with torch.no_grad():
            whole, _ = mixer(hidden_states)
            first, state = mixer(hidden_states[:, :6])
            second, _ = mixer(hidden_states[:, 6:], state=state)
        torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-5, rtol=1e-5, msg=f"{cell} {window}")


def test_config_class_is_the_registered_one():
    assert RecurrentTransformerModel.config_class is RecurrentTransformerConfig


def test_positions_beyond_the_learned_table_give_clear_error():
    model = RecurrentTransformerModel(tiny_config(position_embedding_type="absolute", max_position_embeddings=8))
    model(torch.ones(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(torch.ones(1, 9, dtype=torch.long))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("seq_len", [1, 5, 8, 9, 64, 65, 97, 1100])
def test_chunked_scan_equals_the_one_level_scan(seq_len, reverse):
    """The two-level scan (chunks of 8 here, so short sequences also cross chunks, with a padded last chunk) gives
    the one-level scan's states, from zero and from a given initial state; so does its default chunk."""
    generator = torch.Generator().manual_seed(seq_len)
    coeffs = torch.rand(3, seq_len, 2, 5, generator=generator) * 0.6 + 0.4
    values = torch.randn(3, seq_len, 2, 5, generator=generator)
    initial = torch.randn(3, 2, 5, generator=generator)
    for start in (None, initial):
        expected = scan_rounds(coeffs, values, start, reverse)
        scale = expected.abs().max()
        for chunked in (
            chunked_scan(coeffs, values, start, reverse, chunk=8),
            chunked_scan(coeffs, values, start, reverse),
        ):
            torch.testing.assert_close(chunked / scale, expected / scale, atol=1e-6, rtol=0)
        # In place on one direction's strided slice: the states land in that slice, the other is left alone.
        pair_coeffs, pair_values = torch.stack([coeffs, coeffs], dim=2), torch.stack([values, values], dim=2)
        returned = chunked_scan(pair_coeffs[:, :, 0], pair_values[:, :, 0], start, reverse, chunk=8, in_place=True)
        assert returned.data_ptr() == pair_values.data_ptr()
        torch.testing.assert_close(pair_values[:, :, 0] / scale, expected / scale, atol=1e-6, rtol=0)
        torch.testing.assert_close(pair_values[:, :, 1], values, atol=0, rtol=0)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_local_blocks_equal_the_dense_sliding_window_mask(implementation, side):
    """An encoder's sliding-window layer attends block by block without a (seq x seq) mask; on real tokens that
    equals attention under transformers' dense bidirectional sliding-window mask (|query - key| <= window)."""
    from transformers.masking_utils import create_bidirectional_sliding_window_mask

    torch.manual_seed(0)
    config = tiny_config(
        layer_types=["linear_attention", "sliding_attention"], sliding_window=3, recurrent_cell="mingru"
    )
    config._attn_implementation = implementation
    model = RecurrentTransformerModel(config).eval()
    randomize_biases(model)
    sequences = [torch.randint(1, config.vocab_size, (length,)) for length in (23, 11, 17)]
    input_ids, attention_mask = padded_batch(sequences, side)
    with torch.no_grad():
        blocks = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.bidirectional_sliding_mask = lambda embeds, mask: create_bidirectional_sliding_window_mask(
            config=model.config, inputs_embeds=embeds, attention_mask=mask
        )
        dense = model(input_ids, attention_mask=attention_mask).last_hidden_state
    real = attention_mask.bool()
    assert torch.isfinite(blocks).all()
    torch.testing.assert_close(blocks[real], dense[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("linear", [False, True], ids=["positive", "linear"])
@pytest.mark.parametrize("directions", [1, 2])
def test_fused_mingru_backward_equals_autograd_through_its_terms(directions, linear):
    """MinGRUScan recomputes the gates in backward and applies the chain rule by hand; its gradients (gate
    projection and initial state, with carried padded steps) equal autograd's through the element-wise terms and
    the scan, in float64."""
    generator = torch.Generator().manual_seed(directions)
    projected = (torch.randn(2, 150, directions, 2, 6, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    initial = torch.randn(2, directions, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(2, 150, dtype=torch.bool)
    keep[1, :20], keep[0, 140:] = False, False
    weights = torch.randn(2, 150, directions, 6, generator=generator, dtype=torch.float64)

    fused = MinGRUScan.apply(projected, initial, keep, linear)
    coeffs, values = mingru_terms(projected, keep, linear)
    reference = torch.stack(
        [linear_scan(coeffs[:, :, d], values[:, :, d], initial[:, d], reverse=d == 1) for d in range(directions)], 2
    )
    torch.testing.assert_close(fused, reference, atol=1e-10, rtol=0)
    grads = torch.autograd.grad((fused * weights).sum(), [projected, initial])
    expected = torch.autograd.grad((reference * weights).sum(), [projected, initial])
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, atol=1e-10, rtol=1e-8)


def gla_reference(query, key, value, log_decay, initial):
    """The gla recurrence one step at a time: S_t = exp(log_decay_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t."""
    state = initial
    outputs = []
    for step in range(query.shape[1]):
        update = key[:, step, :, :, None] * value[:, step, :, None, :]
        state = log_decay[:, step].exp()[..., None, None] * state + update
        outputs.append((query[:, step, :, None, :] @ state)[:, :, 0])
    return torch.stack(outputs, dim=1), state


@pytest.mark.parametrize("seq_len", [1, 5, 16, 17, 100])
@pytest.mark.parametrize("chunk_size", [4, 16, 64])
def test_gla_chunks_equal_the_step_by_step_recurrence(seq_len, chunk_size):
    """Outputs, final state and the gradients of query, key, value, decay and initial state, in float64, from a
    zero and a given initial state, with lengths that do and do not fill the last chunk; decays down to
    exp(-8) per step, so the cumulative decay inside a chunk of 64 reaches exp(-500) without overflowing."""
    generator = torch.Generator().manual_seed(seq_len * 100 + chunk_size)

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    query, key, value = (draw(2, seq_len, 3, 5).requires_grad_() for _ in range(3))
    log_decay = (-8 * torch.rand(2, seq_len, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    weights = draw(2, seq_len, 3, 5)
    for initial in (torch.zeros(2, 3, 5, 5, dtype=torch.float64), draw(2, 3, 5, 5)):
        initial.requires_grad_()
        given = initial if initial.abs().sum() > 0 else None
        output, final = gla_chunks(query, key, value, log_decay, given, chunk_size)
        expected_output, expected_final = gla_reference(query, key, value, log_decay, initial)
        torch.testing.assert_close(output, expected_output, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(final, expected_final, atol=1e-10, rtol=1e-10)
        inputs = [query, key, value, log_decay] + ([initial] if given is not None else [])
        grads = torch.autograd.grad((output * weights).sum() + final.sum(), inputs)
        expected = torch.autograd.grad((expected_output * weights).sum() + expected_final.sum(), inputs)
        for grad, expected_grad in zip(grads, expected, strict=True):
            torch.testing.assert_close(grad, expected_grad, atol=1e-9, rtol=1e-9)


def test_gla_padded_steps_move_no_state():
    """A gla layer gives each row's real tokens the outputs they get alone, for padding on the left, inside and on
    the right, in both directions, with non-zero biases (the decay's bias alone would shrink a carried state)."""
    torch.manual_seed(0)
    config = tiny_config(recurrent_cell="gla", bidirectional=True, recurrent_hidden_size=16)
    mixer = RecurrentMixer(config, 0).eval()
    randomize_biases(mixer)
    hidden_states = torch.randn(3, 9, config.hidden_size)
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[0, :3], keep[1, 4:6], keep[2, 6:] = False, False, False
    output, _ = mixer(hidden_states, keep, keep_state=False)
    for row in range(3):
        alone, _ = mixer(hidden_states[row : row + 1, keep[row]], None, keep_state=False)
        torch.testing.assert_close(output[row, keep[row]], alone[0], atol=1e-5, rtol=1e-5)


def test_gla_heads_start_with_spread_decays():
    """Each direction's heads start with decay biases from 0 to 4 (half-lives of 16 to 611 tokens). The mixer holds
    no parameter of its own, which transformers' initialisation skips: this failed before `DecayProjection`."""
    config = tiny_config(recurrent_cell="gla", bidirectional=True, recurrent_hidden_size=16)
    model = RecurrentTransformerModel(config)
    for layer in model.layers:
        bias = layer.recurrent.decay_proj.bias
        torch.testing.assert_close(bias, torch.linspace(0.0, 4.0, 4).repeat(2))
    half_lives = torch.log(torch.tensor(0.5)) / (F.logsigmoid(torch.tensor([0.0, 4.0])) / 16)
    torch.testing.assert_close(half_lives, torch.tensor([16.0, 611.0]), atol=0.5, rtol=0)
