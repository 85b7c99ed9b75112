"""Save and load: Auto classes with the package installed, and remote code in a process without it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_PACKAGE, randomize_biases, tiny_config
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from recurrent_transformer import (
    RecurrentTransformerConfig,
    RecurrentTransformerForCausalLM,
    RecurrentTransformerForMaskedLM,
    RecurrentTransformerForSequenceClassification,
    RecurrentTransformerForTokenClassification,
    RecurrentTransformerModel,
)

CASES = [
    (RecurrentTransformerModel, AutoModel, True),
    (RecurrentTransformerForSequenceClassification, AutoModelForSequenceClassification, True),
    (RecurrentTransformerForTokenClassification, AutoModelForTokenClassification, True),
    (RecurrentTransformerForMaskedLM, AutoModelForMaskedLM, True),
    (RecurrentTransformerModel, AutoModel, False),
    (RecurrentTransformerForSequenceClassification, AutoModelForSequenceClassification, False),
    (RecurrentTransformerForTokenClassification, AutoModelForTokenClassification, False),
    (RecurrentTransformerForCausalLM, AutoModelForCausalLM, False),
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def first_output(outputs):
    return outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs.logits


def example_inputs(vocab_size=64):
    input_ids = torch.randint(1, vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("model_class,auto_class,bidirectional", CASES)
def test_save_then_auto_load_gives_identical_outputs(model_class, auto_class, bidirectional, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(
        bidirectional=bidirectional, num_labels=3, recurrent_cell="gru", position_embedding_type="rope"
    )
    model = model_class(config).eval()
    randomize_biases(model)
    model.save_pretrained(tmp_path)

    files = {path.name for path in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json"} <= files
    assert {"configuration_recurrent_transformer.py", "modeling_recurrent_transformer.py"} <= files
    assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)], files

    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    assert isinstance(AutoConfig.from_pretrained(tmp_path), RecurrentTransformerConfig)
    input_ids, attention_mask = example_inputs()
    with torch.no_grad():
        expected = first_output(model(input_ids, attention_mask=attention_mask))
        actual = first_output(loaded(input_ids, attention_mask=attention_mask))
    assert torch.equal(actual, expected)


REMOTE_SCRIPT = BLOCK_PACKAGE + textwrap.dedent(
    """
    try:
        import recurrent_transformer  # noqa: F401
        raise SystemExit("the package is importable: the test would prove nothing")
    except ImportError:
        pass

    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = torch.load(inputs_path)
    results = {}
    for name, auto_class in [("AutoModel", AutoModel), ("AutoModelForSequenceClassification",
            AutoModelForSequenceClassification), ("AutoModelForCausalLM", AutoModelForCausalLM)]:
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        assert "recurrent_transformer" not in type(model).__module__.split(".")[0], type(model).__module__
        with torch.no_grad():
            outputs = model(**inputs)
        tensor = outputs.last_hidden_state if name == "AutoModel" else outputs.logits
        results[name] = {"class": type(model).__name__, "output": tensor.tolist()}
    json.dump(results, open(out_path, "w"))
    """
)


@pytest.mark.parametrize(
    "saved_class", [RecurrentTransformerForCausalLM, RecurrentTransformerForSequenceClassification]
)
def test_folder_loads_with_remote_code_where_the_package_is_missing(saved_class, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(bidirectional=False, num_labels=3, position_embedding_type="absolute")
    model = saved_class(config).eval()
    randomize_biases(model)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    input_ids, attention_mask = example_inputs()
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    torch.save(inputs, tmp_path / "inputs.pt")

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())

    with torch.no_grad():
        body = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
        own_logits = model(input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(torch.tensor(results["AutoModel"]["output"]), body, atol=1e-6, rtol=0)
    own = (
        "AutoModelForCausalLM"
        if saved_class is RecurrentTransformerForCausalLM
        else "AutoModelForSequenceClassification"
    )
    assert results[own]["class"] == saved_class.__name__
    torch.testing.assert_close(torch.tensor(results[own]["output"]), own_logits, atol=1e-6, rtol=0)
    if saved_class is RecurrentTransformerForSequenceClassification:
        # The language-model head is tied to the saved embeddings, so its logits are determined too.
        expected = body @ model.model.embed_tokens.weight.T
        torch.testing.assert_close(torch.tensor(results["AutoModelForCausalLM"]["output"]), expected, atol=1e-5, rtol=0)
