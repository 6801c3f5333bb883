"""The padded lengths a stage actually processes: its records taken in the order its trainer draws them.

A batch is padded to its longest record, so a phase's peak is set by its longest *batch*, not by the
longest record of the data set: with few steps (``harness profile`` runs 2) most records are never drawn.
These functions take plain numbers (token counts per record, the order of indices per epoch) and return
plain numbers; the caller tokenizes the records and reproduces its trainer's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def trainer_batches(num_records: int, batch_size: int, batches: int,
                    epoch_order: Callable[[int], Sequence[int]] | None = None) -> list[list[int]]:
    """Indices of the first ``batches`` batches, drawn as a PyTorch DataLoader does: each epoch one pass
    over ``epoch_order(epoch)`` (sequential when None) cut into ``batch_size`` pieces, the last one short
    (``drop_last=False``); epochs follow one another until ``batches`` batches are drawn."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; found {batch_size}")
    if num_records < 1 or batches < 1:
        return []
    out: list[list[int]] = []
    epoch = 0
    while len(out) < batches:
        order = list(epoch_order(epoch)) if epoch_order else list(range(num_records))
        if sorted(order) != list(range(num_records)):
            raise ValueError(f"epoch_order({epoch}) is not a permutation of {num_records} records")
        for start in range(0, num_records, batch_size):
            out.append(order[start:start + batch_size])
            if len(out) == batches:
                break
        epoch += 1
    return out


def padded_lengths(record_lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> list[int]:
    """The padded length of each batch: its longest record (right or left padding alike)."""
    return [max(record_lengths[i] for i in batch) for batch in batches if batch]


def longest_batch(record_lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> int:
    """The longest padded batch among ``batches`` (0 when there is none)."""
    return max(padded_lengths(record_lengths, batches), default=0)
