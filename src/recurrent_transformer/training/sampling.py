"""Length-grouped training batches (`--group_by_length`): texts of similar length share a batch, so a batch of short
texts is not padded to the length of one long one.

The order is transformers' `get_length_grouped_indices` (what `Trainer`'s `group_by_length` uses): a random
permutation cut into mega-batches of 50 global batches (fewer on small data), each sorted by length, longest first,
with the longest text of all in the first batch (an out-of-memory error shows at once, not hours in). Two
properties keep a run exact:

- the permutation is drawn from a generator seeded with seed + epoch alone (as Accelerate's seedable sampler does
  for the plain shuffle), never from the global RNG, so a resumed run (`skip_first_batches`) meets the same order;
- the mega-batches count global batches (per-device batch x processes x accumulation steps), so the order does
  not depend on how a global batch is split: Accelerate deals consecutive micro-batches of one order to the
  processes in turn, and 2 processes x 2 rows x 2 accumulated micro-batches take the same 8 rows per step as
  1 process x 8 rows.
"""

import torch
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order depends on (seed, epoch) only; `set_epoch` is called by the loader's
    `set_epoch` (Accelerate's `DataLoaderShard` reaches through its batch sampler to this one)."""

    def __init__(self, lengths: list[int], global_batch_size: int, seed: int):
        super().__init__(global_batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


def padding_share(attention_masks) -> float:
    """Share of the positions in `attention_masks` (an iterable of 0/1 tensors) that are padding."""
    real = positions = 0
    for mask in attention_masks:
        real += int(mask.sum())
        positions += mask.numel()
    return 1 - real / positions if positions else 0.0


def scoring_loader(split, batch_size: int, collate_fn, num_workers: int = 0) -> DataLoader:
    """Batches of a split to score (validation, test, `evaluate`), longest texts first. Scores are sums over rows, so
    their order is free; in file order almost every batch of a long-document set is padded to its one long text
    (20 Newsgroups test at 2,048 tokens: 30+ minutes per model on one CPU thread, against 4 to 8 sorted). Longest
    first, so a batch too large for memory fails at once. Ties keep file order, so the order is fixed."""
    lengths = [len(ids) for ids in split["input_ids"]]
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    return DataLoader(split.select(order), batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)
