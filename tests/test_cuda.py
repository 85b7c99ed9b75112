"""On a CUDA GPU the model computes what it computes on the CPU: cuDNN's recurrent kernels, the packed sequences
and the minGRU scan on the GPU give the CPU's logits, loss and gradients, and cached generation the same tokens.
Skipped where no GPU is present (CI); run on a lent GPU with `pytest tests/test_cuda.py`."""

import pytest
import torch
from conftest import randomize_biases, tiny_config

from recurrent_transformer import RecurrentTransformerForCausalLM, RecurrentTransformerForSequenceClassification

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}  # float32 on both, TF32 off; cuDNN sums in another order


@pytest.fixture(autouse=True)
def no_tf32():
    """TF32 matmuls (10-bit mantissa) would differ from the CPU by about 1e-3; full float32 is the contract."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def padded_batch(vocab_size: int):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, vocab_size, (4, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :5] = 0  # left padding
    attention_mask[1, 8:] = 0  # right padding
    return input_ids, attention_mask, torch.tensor([0, 2, 1, 2])


@pytest.mark.parametrize("pattern", ["HR", "HA"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru"])
def test_classifier_on_gpu_matches_cpu(cell, pattern):
    """Logits, loss and every gradient of a bidirectional classifier on a left- and right-padded batch."""
    torch.manual_seed(0)
    config = tiny_config(recurrent_cell=cell, num_labels=3, layer_pattern=pattern)
    # Training mode (cuDNN's recurrent backward refuses eval mode); tiny_config has no dropout, so it is deterministic.
    cpu_model = RecurrentTransformerForSequenceClassification(config).train()
    randomize_biases(cpu_model)
    gpu_model = RecurrentTransformerForSequenceClassification(config).train()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.cuda()
    batch = padded_batch(config.vocab_size)

    results = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, "cuda")):
        input_ids, attention_mask, labels = (tensor.to(device) for tensor in batch)
        outputs = model(input_ids, attention_mask=attention_mask, labels=labels)
        outputs.loss.backward()
        grads = {name: param.grad.cpu() for name, param in model.named_parameters()}
        results.append((outputs.logits.detach().cpu(), outputs.loss.detach().cpu(), grads))

    (cpu_logits, cpu_loss, cpu_grads), (gpu_logits, gpu_loss, gpu_grads) = results
    torch.testing.assert_close(gpu_logits, cpu_logits, **TOLERANCE)
    torch.testing.assert_close(gpu_loss, cpu_loss, **TOLERANCE)
    assert gpu_grads.keys() == cpu_grads.keys()
    for name, grad in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[name], grad, **TOLERANCE, msg=name)


@pytest.mark.parametrize(("cell", "pattern"), [("lstm", "HA"), ("mingru", "HA"), ("lstm", "SA")])
def test_cached_generation_on_gpu_matches_cpu(cell, pattern):
    """Greedy generation with the recurrent state and key/value cache (a sliding window's too): the GPU picks the
    CPU's tokens, from a left-padded batch."""
    torch.manual_seed(0)
    extra = {"sliding_window": 4} if "S" in pattern else {}
    config = tiny_config(recurrent_cell=cell, bidirectional=False, layer_pattern=pattern, **extra)
    cpu_model = RecurrentTransformerForCausalLM(config).eval()
    randomize_biases(cpu_model)
    gpu_model = RecurrentTransformerForCausalLM(config).eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.cuda()
    input_ids, attention_mask, _ = padded_batch(config.vocab_size)
    input_ids, attention_mask = input_ids[[0, 2]], attention_mask[[0, 2]]  # one left-padded row, one full row

    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cpu_tokens = cpu_model.generate(input_ids, attention_mask=attention_mask, **settings)
        gpu_tokens = gpu_model.generate(input_ids.cuda(), attention_mask=attention_mask.cuda(), **settings)
    assert torch.equal(gpu_tokens.cpu(), cpu_tokens)
