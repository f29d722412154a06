"""Multi-process runs: starting jax.distributed, from flags or from the cluster's environment.

With --coordinator/--num-processes/--process-id (all three, or the ones a cluster does not
supply) every process calls jax.distributed.initialize with them. Without them, a process that
runs under a launcher JAX recognises (SLURM's srun with more than one task, Open MPI's mpirun,
or with JAX_COORDINATOR_ADDRESS set) calls it with no arguments and JAX reads the launcher's
environment itself; anything else is a single-process run and nothing is started.

On CPU the processes all-reduce through gloo (jax_cpu_collectives_implementation, gloo by
default in JAX 0.10); on GPUs through NCCL, chosen by JAX.
"""

from __future__ import annotations

import os

import jax

from .train_config import ConfigError


def launcher_detected(environ=os.environ) -> bool:
    """True under a multi-process launcher whose environment jax.distributed reads by itself."""
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return True  # inside srun (sbatch alone has no step) with several tasks
    return int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ=os.environ) -> bool:
    """Start jax.distributed when asked or when a launcher is detected; True if started."""
    given = (coordinator, num_processes, process_id)
    if all(v is None for v in given):
        if not launcher_detected(environ):
            return False
        jax.distributed.initialize()
        return True
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes must be positive, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if coordinator is not None and ":" not in coordinator:
        raise ConfigError(f"--coordinator must be ADDRESS:PORT, got {coordinator!r}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def barrier(name: str, timeout_s: float = 1800.0) -> None:
    """Wait until every process of a jax.distributed run gets here (a no-op with one process).

    Why not a collective: the first gloo collective must find every process within 30 s, so a
    process still preparing data or compiling makes the others fail. The coordination service's
    barrier waits as long as it is told to."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client jax.distributed.initialize created

    distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))
