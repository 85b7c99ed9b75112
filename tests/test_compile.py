"""torch.compile: the body compiles and gives the eager model's outputs and gradients (issue 6)."""

import pytest
import torch
from conftest import randomize_biases, tiny_config

from recurrent_transformer import RecurrentTransformerForSequenceClassification

pytestmark = pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile is missing")


@pytest.mark.parametrize("cell", ["lstm", "mingru", "gla"])
def test_compiled_model_matches_eager_on_a_padded_batch(cell):
    """Logits, loss and every parameter's gradient of torch.compile(model) equal eager's to 1e-5 on a batch with
    left and right padding (the packed-sequence path for the LSTM, the masked scan for minGRU)."""
    torch.manual_seed(0)
    config = tiny_config(recurrent_cell=cell, num_labels=3, layer_pattern="HA", num_hidden_layers=2)
    eager = RecurrentTransformerForSequenceClassification(config).eval()
    randomize_biases(eager)
    compiled_copy = RecurrentTransformerForSequenceClassification(config).eval()
    compiled_copy.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_copy)
    input_ids = torch.randint(1, config.vocab_size, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :4] = 0  # left padding
    attention_mask[1, 7:] = 0  # right padding
    labels = torch.tensor([0, 2, 1])

    results = []
    for model, parameters_of in ((eager, eager), (compiled, compiled_copy)):
        outputs = model(input_ids, attention_mask=attention_mask, labels=labels)
        outputs.loss.backward()
        grads = {name: param.grad for name, param in parameters_of.named_parameters()}
        results.append((outputs.logits.detach(), outputs.loss.detach(), grads))

    (eager_logits, eager_loss, eager_grads), (compiled_logits, compiled_loss, compiled_grads) = results
    torch.testing.assert_close(compiled_logits, eager_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
