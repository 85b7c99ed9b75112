"""--group_by_length: training batches of texts of similar length. Less padding on texts of very different lengths,
an order drawn from (seed, epoch) alone, and the same global batches however a global batch is split among
processes and accumulated micro-batches."""

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler
from train_helpers import R8_TRAIN

from recurrent_transformer.data import (
    load_labelled_data,
    make_collator,
    tokenize_splits,
    train_tokenizer,
    training_texts,
)
from recurrent_transformer.training.arguments import TrainArguments
from recurrent_transformer.training.loop import make_loaders
from recurrent_transformer.training.sampling import EpochLengthGroupedSampler, padding_share


@pytest.fixture(scope="module")
def r8_tokenized():
    """The R8 fixture's 432 training rows at max_length 256: 12 to 144 tokens, median 90 (no text is cut)."""
    data = load_labelled_data(train_file=R8_TRAIN)
    tokenizer = train_tokenizer(training_texts(data.splits["train"]), vocab_size=1000, model_max_length=256)
    return tokenize_splits(data.splits, tokenizer, 256), tokenizer


def epoch_padding_share(loader, epoch: int) -> float:
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return padding_share(batch["attention_mask"] for batch in loader)


@pytest.mark.parametrize("batch_size", [8, 16, 32])
def test_length_grouped_batches_cut_the_padding_share(r8_tokenized, batch_size):
    """Measured over two whole epochs: shuffled batches hold 35-40 % padding, length-grouped ones 6 % (batch 8),
    13 % (16) and 23 % (32; on 432 rows a mega-batch is only 3 batches: transformers' rule aims at 4 of them)."""
    tokenized, tokenizer = r8_tokenized
    shares = {}
    for group_by_length in (False, True):
        train_args = TrainArguments(per_device_train_batch_size=batch_size, group_by_length=group_by_length)
        loader = make_loaders(tokenized, make_collator(tokenizer), train_args)["train"]
        torch.manual_seed(0)  # the plain shuffle draws from the global RNG outside Accelerate
        shares[group_by_length] = [epoch_padding_share(loader, epoch) for epoch in (0, 1)]
    print(f"batch {batch_size}: padding share shuffled {shares[False]}, length-grouped {shares[True]}")
    assert min(shares[False]) > 0.3
    assert max(shares[True]) < 0.7 * min(shares[False])


def test_the_default_keeps_the_plain_shuffle(r8_tokenized):
    """Without --group_by_length the training loader is the plain shuffle, which Accelerate makes seedable."""
    tokenized, tokenizer = r8_tokenized
    loader = make_loaders(tokenized, make_collator(tokenizer), TrainArguments())["train"]
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)


def test_the_order_depends_on_seed_and_epoch_only():
    lengths = [int(length) for length in torch.randint(2, 500, (300,), generator=torch.Generator().manual_seed(0))]
    sampler = EpochLengthGroupedSampler(lengths, global_batch_size=8, seed=42)
    orders = {}
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global RNG moves between epochs and on resume: the order must not
        orders.setdefault(epoch, []).append(list(sampler))
    assert orders[0][0] == orders[0][1]
    assert orders[0][0] != orders[1][0]
    assert sorted(orders[0][0]) == sorted(orders[1][0]) == list(range(300))  # every row once an epoch
    assert list(EpochLengthGroupedSampler(lengths, 8, seed=43)) != orders[0][0]
    # The longest text comes first (an out-of-memory error shows at once).
    assert lengths[orders[1][0][0]] == max(lengths)


def global_batches(batch_sampler, num_processes: int, accumulation: int) -> list[set[int]]:
    """The rows of each optimizer step when Accelerate shards `batch_sampler` among `num_processes`."""
    shards = [
        list(BatchSamplerShard(batch_sampler, num_processes=num_processes, process_index=index))
        for index in range(num_processes)
    ]
    micro_batches = [batch for step in zip(*shards, strict=True) for batch in step]
    per_step = num_processes * accumulation
    return [set(sum(micro_batches[start : start + per_step], [])) for start in range(0, len(micro_batches), per_step)]


def test_processes_and_accumulation_see_the_same_global_batches():
    """1 process x 8 rows and 2 processes x 2 rows x 2 accumulated micro-batches: the same 8 rows in every step,
    because the order groups global batches (8 rows) whatever their split."""
    lengths = [int(length) for length in torch.randint(2, 500, (64,), generator=torch.Generator().manual_seed(1))]
    one = EpochLengthGroupedSampler(lengths, global_batch_size=8 * 1 * 1, seed=42)
    two = EpochLengthGroupedSampler(lengths, global_batch_size=2 * 2 * 2, seed=42)
    steps_one = global_batches(BatchSampler(one, batch_size=8, drop_last=False), num_processes=1, accumulation=1)
    steps_two = global_batches(BatchSampler(two, batch_size=2, drop_last=False), num_processes=2, accumulation=2)
    assert len(steps_one) == 8 and steps_one == steps_two


@pytest.mark.parametrize("batch_size", [8, 16])
def test_scored_splits_come_longest_first_with_every_row_once(r8_tokenized, batch_size):
    """Validation, test and `evaluate` score length-sorted batches: each row exactly once, lengths never rising,
    and far less padding than file order. Measured on these 432 rows: 1.3 % (batch 8) and 2.9 % (16) of the positions
    padding, against 34 % and 38 % in file order."""
    tokenized, tokenizer = r8_tokenized
    split = tokenized["train"]
    train_args = TrainArguments(per_device_eval_batch_size=batch_size)
    loaders = make_loaders({"train": split, "test": split}, make_collator(tokenizer), train_args)
    batches = list(loaders["test"])
    lengths = [int(length) for batch in batches for length in batch["attention_mask"].sum(-1)]
    assert lengths == sorted(lengths, reverse=True)
    rows = sorted(
        (tuple(ids[mask.bool()].tolist()), int(label))
        for batch in batches
        for ids, mask, label in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True)
    )
    assert rows == sorted(zip(map(tuple, split["input_ids"]), split["labels"], strict=True))
    in_file_order = torch.utils.data.DataLoader(split, batch_size=batch_size, collate_fn=make_collator(tokenizer))
    sorted_share = padding_share(batch["attention_mask"] for batch in batches)
    file_share = padding_share(batch["attention_mask"] for batch in in_file_order)
    assert sorted_share < 0.05 < 0.25 < file_share, (sorted_share, file_share)
