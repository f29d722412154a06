"""Training batches from a cache through Grain: length buckets, crops, seeded and resumable.

The batch of step s is a pure function of (seed, s): epoch e = s // steps_per_epoch draws its
order from a Generator seeded with (seed, e) (chains shuffled within their length group, cut
into batches, batches shuffled, as BatchPlan does in memory), and each example's crop from one
seeded with (seed, s, row). Grain then maps the step indices 0, 1, 2, ... to batches, reading
and padding ahead in threads (or `worker_count` processes); its iterator state, a position in
that sequence, is what a checkpoint stores, and restoring it continues with exactly the batches
an uninterrupted run would have drawn.

A mix (several data directories, TrainConfig.data_mix) draws each epoch's chains the same way
first: per directory its count of chains, every chain as often as the count allows and a subset
seeded by (seed, epoch) for the rest.

Per-process sharding for several hosts: every process computes the same global batch order and
reads only its own rows of each step's batch (shard_index of shard_count), so the hosts' rows
together are the one global batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .batching import empty_batch, pad_protein, padded_length, stack_examples
from .cache import Cache
from .crops import choose_crop, take

class CachedBatches:
    """The plan of a run's batches over a cache, and Grain iterators over it.

    Offers what the trainer uses of BatchPlan (steps_per_epoch, shapes, empty_batch, describe,
    epoch_order, batch), so the loop is the same for both; here epoch_order returns a view
    whose slice [offset:] gives the step numbers from the iterator's position to the end of
    the epoch, and batch(step) takes that step's batch from the Grain iterator. (Taking it in
    batch(), not in the view, keeps the iterator at the trainer's step when the loop stops
    early: the loop checks for its last step between the two.)
    """

    def __init__(self, cache: Cache, batch_size: int, seed: int, pad_to: int | None = None,
                 buckets: Sequence[int] | None = None, crop_size: int | None = None,
                 spatial_crop_fraction: float = 0.5, file_numbering: bool = False,
                 min_length: int = 1, max_length: int | None = None, worker_count: int = 0,
                 shard_index: int = 0, shard_count: int = 1, batch_tokens: int | None = None,
                 mix: Sequence[tuple[str, np.ndarray, int]] | None = None):
        """batch_tokens: instead of batch_size chains per step, as many chains of a padded
        length n as fill this many residues (batch_tokens // n, at least one per process),
        so short chains go many to a step and long ones few.
        mix: (name, cache indices, chains per epoch) of each part of the cache (a data
        directory): each epoch takes that many of the part's chains, all of them as often as
        the count allows and a seeded subset of them for the rest."""
        if batch_size % shard_count:
            raise ValueError(f"batch_size {batch_size} does not split over {shard_count} processes")
        self.cache, self.seed = cache, seed
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.shard_index, self.shard_count = shard_index, shard_count
        self.crop_size, self.spatial_crop_fraction = crop_size, spatial_crop_fraction
        self.file_numbering, self.worker_count = file_numbering, worker_count
        lengths = cache.lengths
        # Crops replace drops: only without a crop size is a long chain left out.
        keep = lengths >= min_length
        if crop_size is None and max_length is not None:
            keep &= lengths <= max_length
        self.members = np.flatnonzero(keep)
        self.dropped = int(len(lengths) - len(self.members))
        if not len(self.members):
            raise ValueError(f"{cache.dir}: no chain of {min_length} residues or more "
                             f"(of {len(lengths)})")
        fed = lengths[self.members] if crop_size is None else np.minimum(lengths[self.members], crop_size)
        self.padded = np.array([padded_length(int(n), pad_to, buckets) for n in fed])
        self.groups = {int(n): self.members[self.padded == n] for n in np.unique(self.padded)}
        self.steps_per_epoch = sum(-(-len(m) // self.global_rows(n)) for n, m in self.groups.items())
        self.cropped = int(np.sum(lengths[self.members] > crop_size)) if crop_size else 0
        self._epoch_cache: tuple[int, list[np.ndarray]] | None = None
        self.mix = None if mix is None else self._check_mix(mix)
        if self.mix is not None:  # constant: _check_mix allows a subset only at one chain per step
            self.steps_per_epoch = len(self.epoch_batches(0))
        self._iterator = None
        self._position = 0

    def __getstate__(self):
        # What Grain's worker processes get (batch_at is pickled with its object): the plan,
        # not the iterator that drives them.
        state = dict(self.__dict__)
        state["_iterator"] = state["_epoch_cache"] = None
        return state

    # -- the plan --------------------------------------------------------------------------------

    def global_rows(self, length: int) -> int:
        """Chains per step at this padded length, over all processes."""
        if self.batch_tokens is None:
            return self.batch_size
        rows = max(1, self.batch_tokens // length)
        return max(self.shard_count, rows - rows % self.shard_count)

    def rows(self, length: int) -> int:
        """This process's rows of a batch of this padded length."""
        return self.global_rows(length) // self.shard_count

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(self.rows(length), length) for length in self.groups]

    def describe(self) -> str:
        parts = [f"{length}: {len(m)}" for length, m in self.groups.items()]
        crop = (f"{self.cropped} cropped to {self.crop_size} (spatial with p = "
                f"{self.spatial_crop_fraction})" if self.crop_size else "no crops")
        per_step = (f"{self.batch_size} per step" if self.batch_tokens is None else
                    f"up to {self.batch_tokens} residues per step (" + ", ".join(
                        f"{self.global_rows(n)} x {n}" for n in self.groups) + ")")
        if self.mix is not None:
            per_step += "; per epoch " + ", ".join(f"{count} of the {len(m)} chains of {name}"
                                                   for name, m, count in self.mix)
        return (f"{len(self.members)} chains from {self.cache.dir} ({self.dropped} left out by "
                f"length, {crop}) in {len(self.groups)} padded lengths ({', '.join(parts)}), "
                f"{per_step}, {self.steps_per_epoch} steps per epoch")

    def empty_batch(self, length: int) -> dict[str, np.ndarray]:
        return empty_batch(self.rows(length), length, self.file_numbering)

    def _check_mix(self, mix):
        parts = []
        for name, indices, count in mix:
            members = np.intersect1d(np.asarray(indices, np.int64), self.members)
            if not len(members):
                raise ValueError(f"{name}: no chain to train on (of {len(indices)})")
            if count % len(members) and any(self.global_rows(n) != 1 for n in self.groups):
                raise ValueError(f"{name}: {count} of its {len(members)} chains per epoch draws a "
                                 "new subset each epoch, which needs one chain per step (batch "
                                 "size 1, no batch_tokens)")
            parts.append((name, members, int(count)))
        return parts

    def _epoch_groups(self, rng) -> dict[int, np.ndarray]:
        """The cache indices of one epoch by padded length: each member once, or the mix's."""
        if self.mix is None:
            return self.groups
        drawn = np.concatenate([np.concatenate([np.tile(members, count // len(members)),
                                                rng.choice(members, count % len(members), replace=False)])
                                for _, members, count in self.mix])
        padded = self.padded[np.searchsorted(self.members, drawn)]
        return {n: drawn[padded == n] for n in self.groups if np.any(padded == n)}

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Epoch `epoch`'s batches as arrays of cache indices (global batches, all rows)."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for length, members in self._epoch_groups(rng).items():
            members, rows = rng.permutation(members), self.global_rows(length)
            batches += [members[i:i + rows] for i in range(0, len(members), rows)]
        order = [batches[i] for i in rng.permutation(len(batches))]
        self._epoch_cache = (epoch, order)
        return order

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of the batch of `step`, padded to their bucket."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        indices = self.epoch_batches(epoch)[k]
        length = int(self.padded[np.searchsorted(self.members, indices[0])])
        rows = self.rows(length)
        lo = self.shard_index * rows
        examples = []
        for row in range(lo, min(lo + rows, len(indices))):
            protein = self.cache[int(indices[row])]
            rng = np.random.default_rng([self.seed, int(step), row])
            positions, _ = choose_crop(protein, self.crop_size, self.spatial_crop_fraction, rng)
            examples.append(pad_protein(take(protein, positions), length, self.file_numbering))
        if not examples:  # this process's rows are all padding of a short last batch
            return self.empty_batch(length)
        return stack_examples(examples, rows)

    # -- Grain -----------------------------------------------------------------------------------

    def dataset(self, total_steps: int):
        """Grain's IterDataset of batches for steps 0 .. total_steps - 1."""
        import grain

        steps = grain.MapDataset.range(total_steps).map(self.batch_at)
        if self.worker_count > 0:
            from absl import flags

            # Grain's worker processes read absl flags, which only an absl app parses; take
            # their defaults (else: UnparsedFlagAccessError).
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            return steps.to_iter_dataset().mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.worker_count))
        # Threads: reading and padding a batch is milliseconds, a train step far longer.
        return steps.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))

    def start(self, total_steps: int, step: int, state: dict | None = None):
        """Position the iterator before `step`: from a checkpoint's iterator state when given
        (it must point at `step`), else from the beginning or by index."""
        self._iterator = iter(self.dataset(total_steps))
        if state is not None:
            self._iterator.set_state(state)
        elif step:
            self._iterator.set_state(_position_state(self._iterator.get_state(), step))
        self._position = step

    def close(self):
        """Stop Grain's worker processes or threads (and free their shared memory)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "close"):
            iterator.close()

    def iterator_state(self) -> dict:
        """What a checkpoint stores: Grain's iterator state (JSON)."""
        return self._iterator.get_state()

    # -- the trainer's BatchPlan protocol ---------------------------------------------------------

    def epoch_order(self, rng=None):
        # The order is drawn from the seed and the epoch, not from the trainer's generator.
        return _EpochView(self)

    def batch(self, step: int):
        return self._next(step)

    def _next(self, step: int):
        if self._iterator is None or self._position != step:
            raise RuntimeError(f"the Grain iterator is at step {self._position}, not {step}")
        self._position += 1
        return next(self._iterator)


def _position_state(state: dict, step: int) -> dict:
    """Grain's state of a MapDataset-backed iterator positioned at `step` (for the
    thread-prefetch iterator it is {'next_index': n})."""
    if set(state) != {"next_index"}:
        raise ValueError(f"cannot position a Grain iterator of state {state} by index; "
                         "resume from a checkpoint's iterator state")
    return {"next_index": step}


class _EpochView:
    """The trainer's `order[offset:]`: the steps from the loader's current one to the end of
    its epoch."""

    def __init__(self, plan: CachedBatches):
        self.plan = plan

    def __getitem__(self, item: slice):
        plan = self.plan
        start = plan._position
        end = (start // plan.steps_per_epoch + 1) * plan.steps_per_epoch
        return range(start, end)
