"""How a training example was launched, read from the environment before any framework is imported.

Two launchers matter:

* ``torchrun`` (PyTorch, NumPy and CuPy examples) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
  ``LOCAL_WORLD_SIZE`` for every process it starts: :func:`torchrun`.
* A multi-host JAX job (:func:`jax_multihost`): ``JAX_COORDINATOR_ADDRESS`` (read by
  ``jax.distributed.initialize`` itself) with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here and
  passed on), or a Slurm or Open MPI job of several tasks, which ``jax.distributed.initialize()`` detects
  on its own.

Knowing the rank and the world size this early lets the command line refuse a batch that does not split
over the processes, and lets only the first process create the run folder, before torch or JAX load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """This process's place in a multi-process job: ``rank`` in ``[0, world_size)``, and its place among
    the processes of its own machine. ``source`` names the launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    source: str = "single process"

    @property
    def is_main(self) -> bool:
        """The process that logs, evaluates and writes the run's files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Launch()


def _int(name: str, default: int | None = None) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def torchrun() -> Launch:
    """The ``torchrun`` environment of this process, or :data:`SINGLE` when ``WORLD_SIZE`` is not set."""
    world = _int("WORLD_SIZE")
    if world is None:
        return SINGLE
    return Launch(
        rank=_int("RANK", 0),
        world_size=world,
        local_rank=_int("LOCAL_RANK", 0),
        local_world_size=_int("LOCAL_WORLD_SIZE", world),
        source="torchrun",
    )


def jax_multihost() -> Launch:
    """The multi-host JAX environment of this process, or :data:`SINGLE` when none is present.

    ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), else a Slurm job step
    of several tasks (``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``), else an Open MPI job of
    several processes (``OMPI_COMM_WORLD_SIZE``, ``OMPI_COMM_WORLD_RANK``). ``world_size`` and ``rank``
    count processes (hosts, or processes per host), not devices.
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        world = _int("JAX_NUM_PROCESSES")
        if world is None:
            raise ValueError(
                "JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES is not: set both, and "
                "JAX_PROCESS_ID on every process"
            )
        rank = _int("JAX_PROCESS_ID")
        if rank is None:
            raise ValueError("JAX_COORDINATOR_ADDRESS is set but JAX_PROCESS_ID is not")
        return Launch(rank=rank, world_size=world, source="JAX_COORDINATOR_ADDRESS")
    slurm = _int("SLURM_NTASKS") or _int("SLURM_NPROCS")
    if slurm and slurm > 1 and "SLURM_PROCID" in os.environ and "SLURM_JOB_ID" in os.environ:
        return Launch(
            rank=_int("SLURM_PROCID", 0), world_size=slurm, local_rank=_int("SLURM_LOCALID", 0), source="slurm"
        )
    ompi = _int("OMPI_COMM_WORLD_SIZE")
    if ompi and ompi > 1:
        return Launch(
            rank=_int("OMPI_COMM_WORLD_RANK", 0),
            world_size=ompi,
            local_rank=_int("OMPI_COMM_WORLD_LOCAL_RANK", 0),
            source="open mpi",
        )
    return SINGLE
