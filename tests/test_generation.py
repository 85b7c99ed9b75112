"""Causal language modelling with a recurrent cache: incremental decoding, generate(), left padding, pipelines."""

import itertools

import pytest
import torch
from conftest import CELLS, randomize_biases, tiny_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import DynamicCache, PreTrainedTokenizerFast, pipeline

from recurrent_transformer import RecurrentTransformerForCausalLM


def causal_cases():
    for cell, layer_type, window in itertools.product(
        CELLS, ("hybrid", "hybrid_sliding", "linear_attention", "full_attention", "sliding_attention"), (None, 3)
    ):
        if layer_type in ("full_attention", "sliding_attention") and (cell != "lstm" or window is not None):
            continue  # no recurrence: one case
        yield pytest.param(cell, layer_type, window, id=f"{cell}-{layer_type}-w{window}")


def causal_model(cell="lstm", layer_type="hybrid", window=None, positions="rope", seed=0, **overrides):
    torch.manual_seed(seed)
    extra = {"sliding_window": 4} if layer_type in ("hybrid_sliding", "sliding_attention") else {}
    config = tiny_config(
        bidirectional=False,
        recurrent_cell=cell,
        layer_pattern=layer_type,
        recurrent_window=window,
        position_embedding_type=positions,
        **extra,
        **overrides,
    )
    model = RecurrentTransformerForCausalLM(config).eval()
    randomize_biases(model, seed)
    return model


@pytest.mark.parametrize(
    "cell,layer_type,window,overrides",
    [(*case.values, {}) for case in causal_cases()]
    + [pytest.param("mingru", "linear_attention", None, {"mingru_candidate": "linear"}, id="mingru-linear-candidate")],
)
def test_incremental_decoding_equals_the_full_pass(cell, layer_type, window, overrides):
    model = causal_model(cell, layer_type, window, **overrides)
    input_ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(input_ids).logits
        outputs = model(input_ids[:, :5], cache=DynamicCache(config=model.config), use_cache=True)
        steps = [outputs.logits]
        for t in range(5, 12):
            outputs = model(input_ids[:, t : t + 1], cache=outputs.cache, use_cache=True)
            steps.append(outputs.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell,layer_type,window", list(causal_cases()))
def test_greedy_generate_with_cache_equals_without(cell, layer_type, window):
    model = causal_model(cell, layer_type, window)
    prompt = torch.randint(1, 64, (2, 4), generator=torch.Generator().manual_seed(4))
    cached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=10, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)


def left_padded(prompts):
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


@pytest.mark.parametrize(
    "cell,layer_type,window,positions",
    [
        ("lstm", "hybrid", None, "rope"),
        ("gru", "linear_attention", None, "none"),
        ("mingru", "hybrid_sliding", None, "absolute"),
        ("lstm", "hybrid", 3, "absolute"),
        ("rnn", "linear_attention", 3, "rope"),
    ],
)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(cell, layer_type, window, positions):
    model = causal_model(cell, layer_type, window, positions)
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(1, 64, (length,), generator=generator) for length in (5, 2, 7)]
    input_ids, attention_mask = left_padded(prompts)
    batched = model.generate(
        input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False, pad_token_id=0
    )
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert torch.equal(batched[row, input_ids.shape[1] :], alone[0, len(prompt) :]), f"row {row}"


@pytest.mark.parametrize("layer_type", ["hybrid", "linear_attention"])
def test_beam_search_agrees_with_the_uncached_path(layer_type):
    model = causal_model("lstm", layer_type)
    input_ids, attention_mask = left_padded([torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10])])
    kwargs = dict(attention_mask=attention_mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(input_ids, **kwargs), model.generate(input_ids, use_cache=False, **kwargs))


def test_sampling_runs_and_is_seeded():
    model = causal_model("gru", "hybrid")
    prompt = torch.tensor([[3, 4, 5]])
    torch.manual_seed(1)
    first = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=10, pad_token_id=0)
    torch.manual_seed(1)
    second = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=10, pad_token_id=0)
    assert first.shape == (1, 9) and torch.equal(first, second)


def test_recurrent_state_has_a_fixed_size_and_lives_in_the_cache():
    """Each new token costs the same: a recurrence-only model's cache does not grow with the context."""
    model = causal_model("lstm", "linear_attention", positions="none")
    cache = DynamicCache(config=model.config)

    def cache_numel():
        total = 0
        for layer in cache.layers:
            for states in (layer.recurrent_states, layer.conv_states):
                total += sum(t.numel() for t in states.values() if t is not None)
        return total

    with torch.no_grad():
        outputs = model(torch.tensor([[1, 2, 3]]), cache=cache, use_cache=True)
        sizes = []
        for _ in range(40):
            outputs = model(torch.tensor([[4]]), cache=outputs.cache, use_cache=True)
            sizes.append(cache_numel())
    assert len(set(sizes)) == 1 and sizes[0] > 0
    for module in model.modules():
        # No state on module attributes: only parameters and buffers hold tensors.
        assert not [name for name, value in vars(module).items() if isinstance(value, torch.Tensor)], module


def test_generate_from_inputs_embeds():
    model = causal_model("mingru", "linear_attention", positions="none")
    prompt = torch.tensor([[3, 4, 5]])
    from_ids = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    embeds = model.get_input_embeddings()(prompt)
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(from_embeds[0], from_ids[0, 3:])


def char_tokenizer(text: str) -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for char in sorted(set(text)):
        vocab.setdefault(char, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def test_text_generation_pipeline(tmp_path):
    tokenizer = char_tokenizer("abcdefghijklmnopqrstuvwxyz ")
    torch.manual_seed(0)
    config = tiny_config(bidirectional=False, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = RecurrentTransformerForCausalLM(config)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    result = generator(["hello world", "abc"], max_new_tokens=5, do_sample=False)
    assert len(result) == 2 and result[1][0]["generated_text"].startswith("abc")
    direct = model.generate(**tokenizer("abc", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert result[1][0]["generated_text"] == tokenizer.decode(direct[0], skip_special_tokens=True)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_token_step_matches_the_sequence_kernel_and_a_masked_row_keeps_its_state(cell):
    # A decoding step runs the cell's step function (torch.lstm_cell, ...), not nn.LSTM: same numbers, 1e-6.
    torch.manual_seed(0)
    model = causal_model(cell=cell, layer_type="linear_attention")
    mixer = model.model.layers[0].recurrent
    inputs = torch.randn(3, 1, 32)
    state = tuple(torch.randn(3, 1, mixer.state_size) for _ in range(2 if cell == "lstm" else 1))
    keep = torch.tensor([[True], [False], [True]])
    with torch.no_grad():
        output, new_state = mixer.torch_cell(inputs, keep, state)
        initial = tuple(part.transpose(0, 1).contiguous() for part in state)
        expected_output, expected_final = mixer.cell(inputs, initial if cell == "lstm" else initial[0])
    expected_final = expected_final if isinstance(expected_final, tuple) else (expected_final,)
    for got, want, old in zip(new_state, expected_final, state, strict=True):
        torch.testing.assert_close(got[[0, 2]], want.transpose(0, 1)[[0, 2]], atol=1e-6, rtol=0)
        torch.testing.assert_close(got[1], old[1], atol=0, rtol=0)  # the masked row's state is untouched
    torch.testing.assert_close(output[[0, 2]], expected_output[[0, 2]], atol=1e-6, rtol=0)


@pytest.mark.parametrize("window", [3, 4])
def test_blockwise_sliding_attention_equals_the_dense_mask(window):
    # More than two windows of queries with sdpa: attention runs block by block; eager always uses the dense mask.
    torch.manual_seed(0)
    config = tiny_config(bidirectional=False, layer_pattern="S", sliding_window=window, position_embedding_type="rope")
    model = RecurrentTransformerForCausalLM(config).eval()
    randomize_biases(model)
    input_ids = torch.randint(1, 64, (2, 23))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :5] = 0  # left padding
    layer = model.model.layers[0].attention
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        query = torch.zeros(1, 1, 23, 1)
        mask = torch.ones(1, 1, 23, 23, dtype=torch.bool)
        assert layer.blockwise(query, query, mask)
        blockwise = model(input_ids, attention_mask=attention_mask).logits
        model.config._attn_implementation = "eager"
        dense = model(input_ids, attention_mask=attention_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(blockwise[real], dense[real], atol=1e-5, rtol=0)
