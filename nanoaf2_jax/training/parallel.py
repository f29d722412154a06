"""Data parallelism over every device of every process, with jax.sharding.

One `Mesh` over `jax.devices()` (all processes' devices, in process order) with a single `data`
axis. Each global batch is split along it (`NamedSharding(mesh, P('data'))`: device d holds
rows d·B/D to (d+1)·B/D), while parameters and optimiser state are replicated (`P()`). The
train step is jitted with these shardings; XLA's SPMD partitioner then runs the forward and
backward pass on each device's rows and all-reduces the gradients, so the step computes what
one device computes on the whole batch (same noise, same losses; float rounding of the
reductions only). No communication code of our own: the mesh and the shardings are the whole
interface, as in MaxText, t5x and Flax's examples.

Gradient accumulation (grad_accum = K) splits each global batch of K·B rows into K
micro-batches inside the step (`lax.scan`) and sums their gradients: the effective batch is
K·B at the activation memory of B. Each micro-batch's losses are divided by the denominators of
the whole K·B batch (train_step.loss_totals), so the K parts add up to the whole batch's loss
and gradient. The step's noise is drawn for the whole global batch in one piece, as the
one-device step draws it, and split with the batch: example i gets the same noise whatever the
number of devices or micro-batches, and K = 1 on one device is the previous step exactly.

Multi-process runs (jax.distributed, distributed.py): every process builds the same host
batch (the data order is seeded) and transfers only the rows of its own devices
(`make_array_from_callback`), so the global array exists nowhere in one piece.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..compilation.exported_programs import cached_jit
from .train_config import ConfigError
from .train_step import draw_train_noise_for, frozen_loss_fn, loss_totals, train_step
from .trainable import keep_frozen

DATA_AXIS = "data"


class DataParallel:
    """The mesh of a run and the shardings of its arrays."""

    def __init__(self, devices=None):
        devices = jax.devices() if devices is None else list(devices)
        self.mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
        self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
        self.replicated = NamedSharding(self.mesh, P())

    @property
    def size(self) -> int:
        return self.mesh.size

    def describe(self) -> str:
        kinds = sorted({d.platform for d in self.mesh.devices.flat})
        return (f"{self.size} {'/'.join(kinds)} device(s) in {jax.process_count()} process(es), "
                f"data-parallel mesh axis '{DATA_AXIS}'")

    def check_batch_size(self, batch_size: int):
        if batch_size % self.size:
            raise ConfigError(
                f"batch_size {batch_size} does not divide over {self.size} devices: the global "
                f"batch is split evenly along the data axis; use a multiple of {self.size}")

    def put_batch(self, host_batch: dict) -> dict:
        """A host batch (every process holds the same one) as global arrays split along the
        data axis; each process transfers only its own devices' rows."""
        return {k: _from_host(v, self.batch_sharding) for k, v in host_batch.items()}

    def replicate(self, tree):
        """Host values (the same in every process) as arrays replicated over the mesh."""
        return jax.tree_util.tree_map(lambda x: _from_host(np.asarray(x), self.replicated), tree)

    def abstract(self, tree):
        """jax.eval_shape output with the replicated sharding attached (restore targets)."""
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), tree)


def _from_host(x: np.ndarray, sharding):
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def split_micro_batches(tree, k: int):
    """[K·b, ...] -> [K, b, ...] with micro-batch j holding rows j, K + j, 2K + j, ...: each
    device's contiguous block of rows then holds equal shares of every micro-batch, so the
    split moves no data between devices."""

    def split(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree_util.tree_map(split, tree)


def accumulated_train_step(params, opt_state, batch, noise, *, config, optimizer, grad_accum,
                           attention_mask=False, compute_dtype=None, progress=None, trainable="all"):
    """One optimiser step over grad_accum micro-batches of `batch`: their gradients summed,
    each with the whole batch's loss denominators, then one clip and one AdamW update."""
    totals = loss_totals(batch["mask"], batch.get("residue_index"))
    grad_fn = jax.grad(frozen_loss_fn(trainable), has_aux=True)

    def body(acc, micro):
        grads, metrics = grad_fn(params, *micro, config, attention_mask, totals, compute_dtype, progress)
        return jax.tree_util.tree_map(jnp.add, acc, (grads, metrics)), None

    micro = split_micro_batches((batch, noise), grad_accum)
    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    shapes = jax.eval_shape(lambda: grad_fn(params, *first, config, attention_mask, totals, compute_dtype,
                                            progress))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, metrics), _ = jax.lax.scan(body, zeros, micro)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    new_params = keep_frozen(optax.apply_updates(params, updates), params, trainable)
    return new_params, opt_state, dict(metrics, grad_norm=optax.global_norm(grads))


def make_parallel_train_step(config, optimizer, parallel: DataParallel, attention_mask=False,
                             grad_accum: int = 1, compute_dtype=None, donate: bool = True,
                             total_steps: int | None = None, trainable: str = "all",
                             cache_key: str | None = None):
    """jit'd (params, opt_state, batch, train_key, step) -> (params, opt_state, metrics) with
    the mesh's shardings. The step's noise is drawn from fold_in(train_key, step) for the whole
    global batch, as make_keyed_train_step draws it. total_steps: the run's length, so that the
    loss knows the share of the run done (train_step.loss_fn's progress); None: unscheduled.
    trainable: trainable.py's choice; `optimizer` must be restricted to it (trainable.restrict).
    cache_key: everything the step's program depends on besides the code and the arguments'
    shapes (the configs and settings, as text); given, the traced step is kept on disk
    (exported_programs.py) so that a later process skips tracing it."""

    def step(params, opt_state, batch, train_key, step_index):
        key = jax.random.fold_in(train_key, step_index)
        B, L = batch["sequence"].shape
        noise = draw_train_noise_for(config, key, B, L, batch["coords_CA"].dtype)
        # The share of the run at the middle of this step: float32 division rounds 160 / 200 to
        # 0.79999995, so a term that starts at 0.8 would start a step late; half a step of margin
        # makes it start at step round(start · total_steps) exactly.
        progress = None if total_steps is None else (step_index + 0.5) / total_steps
        if grad_accum == 1:
            return train_step(params, opt_state, batch, noise, config=config, optimizer=optimizer,
                              attention_mask=attention_mask, compute_dtype=compute_dtype, progress=progress,
                              trainable=trainable)
        return accumulated_train_step(params, opt_state, batch, noise, config=config,
                                      optimizer=optimizer, grad_accum=grad_accum,
                                      attention_mask=attention_mask, compute_dtype=compute_dtype,
                                      progress=progress)

    rep, data = parallel.replicated, parallel.batch_sharding
    shardings = dict(in_shardings=(rep, rep, data, rep, rep), out_shardings=rep)
    donate_argnums = (0, 1) if donate else ()
    if cache_key is None:
        return jax.jit(step, donate_argnums=donate_argnums, **shardings)
    return cached_jit(step, "train-step", cache_key, donate_argnums, **shardings)
