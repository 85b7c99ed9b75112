"""Starting from a pretrained BERT-family checkpoint: `train --init_from` converts it on the fly (recurrence added,
gated to zero), freezes the pretrained weights for N steps or gives the new layers their own learning rate, and saves
a folder that reloads with the package and, in a clean process, without it; `convert` writes such a folder on its
own; the comparison runs "BERT alone" against "BERT + recurrence"; the card names the base model and the new layers.

The source is a tiny random BertForMaskedLM with the R8 fixture's WordPiece vocabulary, saved in the test."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_PACKAGE
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from train_helpers import REPO_ROOT, SMOKE, error_line, files_under, run_command
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForMaskedLM

from recurrent_transformer.conversion import RECORD_FILE, convert_checkpoint
from recurrent_transformer.data import load_labelled_data, train_tokenizer, training_texts
from recurrent_transformer.training.build import build_optimizer, build_scheduler

COMPARE_SMOKE = REPO_ROOT / "configs" / "compare" / "smoke.yaml"
RUN = [SMOKE, "--max_length", 48, "--disable_tqdm", "--learning_rate", 3e-3]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A 2-layer BERT (width 32) with random weights and the tokenizer learned on the R8 fixture."""
    folder = tmp_path_factory.mktemp("tiny-bert") / "tiny-bert"
    data = load_labelled_data(train_file=REPO_ROOT / "tests" / "fixtures" / "r8" / "train.csv")
    tokenizer = train_tokenizer(training_texts(data.splits["train"]), vocab_size=800, model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def frozen_run(bert_folder, tmp_path_factory):
    """3 steps with the pretrained weights held for all 3: only the new recurrent layers, gates and head move."""
    output_dir = tmp_path_factory.mktemp("frozen") / "run"
    argv = [*RUN, "--output_dir", output_dir, "--init_from", bert_folder, "--max_steps", 3, "--eval_steps", 3]
    results = run_command("train", [*argv, "--freeze_pretrained_steps", 3, "--load_best_model_at_end", "false"])
    return output_dir, results


def test_train_from_bert_converts_and_records_what_is_new(bert_folder, frozen_run):
    output_dir, results = frozen_run
    assert results["global_step"] == 3
    config = json.loads((output_dir / "config.json").read_text())
    assert config["layer_types"] == ["hybrid", "hybrid"] and config["norm_placement"] == "post"
    assert config["recurrent_cell"] == "lstm" and config["recurrent_gate"] and len(config["id2label"]) == 8
    record = json.loads((output_dir / RECORD_FILE).read_text())
    assert record["source"] == str(bert_folder) and record["recurrent_layers"] == [0, 1]
    assert record["head"] == "new" and "score.weight" in record["new_parameters"]
    # The run's tokenizer is the checkpoint's, and takes no token_type_ids.
    assert (output_dir / "tokenizer.json").read_text() == (bert_folder / "tokenizer.json").read_text()
    assert "token_type_ids" not in AutoTokenizer.from_pretrained(output_dir)("net profit")


def test_frozen_pretrained_weights_stay_exactly_the_sources(bert_folder, frozen_run):
    output_dir, _ = frozen_run
    saved = load_file(output_dir / "model.safetensors")
    converted, record = convert_checkpoint(bert_folder)  # the same weights, before any step
    new = set(record["new_parameters"])
    before = dict(converted.named_parameters())
    provided = [name for name in saved if name in before and name not in new]
    assert len(provided) > 20
    for name in provided:
        assert torch.equal(saved[name], before[name].detach()), name
    gates = [name for name in saved if name.endswith("recurrent_gate")]
    assert gates and all(saved[name].abs().max() > 0 for name in gates)  # the gates moved off zero


def test_new_layers_get_their_own_learning_rate_and_the_freeze_lasts_its_steps(bert_folder):
    model, record = convert_checkpoint(bert_folder)
    optimizer = build_optimizer(model, 1e-4, 0.01, new_parameters=set(record["new_parameters"]), new_learning_rate=1e-2)
    rates = {group["provided"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {True: 1e-4, False: 1e-2}
    scheduler = build_scheduler(optimizer, "constant_with_warmup", 0, 10, 1, frozen_steps=2)
    seen = []
    for _ in range(4):
        seen.append({group["provided"]: group["lr"] for group in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    assert [rates[True] for rates in seen] == [0.0, 0.0, 1e-4, 1e-4] and all(rates[False] == 1e-2 for rates in seen)


REMOTE_SCRIPT = BLOCK_PACKAGE + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, out_path = sys.argv[1:3]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)  # a standard tokenizer: no custom code
    batch = tokenizer(["net profit rose", "oil prices fell sharply in heavy trading"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    json.dump({"class": type(model).__module__, "logits": logits.tolist()}, open(out_path, "w"))
    """
)


def test_the_trained_folder_reloads_with_and_without_the_package(frozen_run, tmp_path):
    output_dir, _ = frozen_run
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    batch = tokenizer(
        ["net profit rose", "oil prices fell sharply in heavy trading"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = model(**batch).logits
    (tmp_path / "load_remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "load_remote.py", str(output_dir), "out.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr  # nothing asked
    output = json.loads((tmp_path / "out.json").read_text())
    assert not output["class"].startswith("recurrent_transformer")
    torch.testing.assert_close(torch.tensor(output["logits"]), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max_length", 100], "max_length=100 exceeds the 64 positions of init_from"),
        (["--recurrent_layers", "last:5"], "asks for more than the source's 2 layers"),
        (["--config_overrides", "hidden_size=64"], "config_overrides ['hidden_size'] come from init_from"),
        (["--recurrent_cell", "lstn"], "recurrent_cell='lstn' is not one of"),
    ],
    ids=["max-length", "layers", "override", "cell"],
)
def test_bad_conversion_settings_are_refused_before_anything_is_written(bert_folder, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--init_from", bert_folder, *argv])
    assert stopped.value.code == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_freezing_needs_init_from(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_command("train", [SMOKE, "--output_dir", tmp_path / "out", "--freeze_pretrained_steps", 2])
    assert "apply to a run with --init_from" in error_line(capsys)


def test_convert_command_writes_a_loadable_folder(bert_folder, tmp_path):
    output_dir = tmp_path / "converted"
    argv = ["--source", bert_folder, "--output_dir", output_dir, "--recurrent_layers", "last:1", "--num_labels", 3]
    record = run_command("convert", [*argv, "--recurrent_cell", "mingru"])
    assert record["recurrent_layers"] == [1] and record["recurrent_cell"] == "mingru"
    assert {"model.safetensors", "config.json", "tokenizer.json", RECORD_FILE} <= files_under(output_dir)
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert model.config.layer_types == ["full_attention", "hybrid"] and model.config.num_labels == 3


def test_convert_refuses_an_occupied_folder_and_an_unknown_head(bert_folder, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        run_command("convert", ["--source", bert_folder, "--output_dir", tmp_path / "taken"])
    assert "already holds another run" in error_line(capsys)
    with pytest.raises(SystemExit):
        run_command("convert", ["--source", bert_folder, "--output_dir", tmp_path / "new", "--head", "qa"])
    assert "head='qa' is not one of" in error_line(capsys)


def test_comparison_of_bert_alone_and_bert_with_recurrence(bert_folder, tmp_path):
    """The seed's experiment on a pretrained base, end to end on a slice: the same checkpoint, budget, split and
    seeds, with and without recurrent sub-layers; and the published card names the base model and the new layers."""
    output_dir = tmp_path / "compare"
    argv = [COMPARE_SMOKE, "--output_dir", output_dir, "--presets", "pretrained,pretrained+gru", "--seeds", 1]
    argv += ["--pretrained_model", bert_folder, "--pretrain_steps", 0, "--max_steps", 4, "--no_svm_baseline"]
    results = run_command("compare", argv)
    assert [row["label"] for row in results["rows"]] == ["tiny-bert", "tiny-bert+gru"]
    alone = json.loads((output_dir / "runs" / "tiny-bert" / "seed-1" / RECORD_FILE).read_text())
    with_gru = json.loads((output_dir / "runs" / "tiny-bert+gru" / "seed-1" / RECORD_FILE).read_text())
    assert alone["recurrent_layers"] == [] and with_gru["recurrent_layers"] == [0, 1]
    counts = results["parameter_counts"]
    assert counts["tiny-bert+gru"] > counts["tiny-bert"] and results["parameter_mismatch"] == []

    staging = tmp_path / "stage"
    run_dir = output_dir / "runs" / "tiny-bert+gru" / "seed-1"
    run_command("push-to-hub", ["--model_dir", run_dir, "--repo_id", "someone/r8-bert-gru", "--dry_run",
                                "--staging_dir", staging, "--base_model", "someone/tiny-bert"])  # fmt: skip
    card = ModelCard.load(staging / "README.md")
    assert card.data.base_model == "someone/tiny-bert"
    assert f"Converted from `{bert_folder}` (bert) with new gru sub-layers in layers [0, 1]" in card.text
    assert (staging / RECORD_FILE).is_file()
