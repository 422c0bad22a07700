"""Cross-backend benchmarks of the VICReg loss: ``python -m benchmarks --help``.

For NumPy, PyTorch, JAX and CuPy (CPU and GPU where present) the suite times ``vicreg`` against, in the
same process and interleaved, the official ``d x d`` formulation written in that framework, lightly's
``VICRegLoss`` (PyTorch, when installed) and one ``z @ z.T`` of the same shape (the hardware-limit proxy);
measures each one's peak memory; checks that their losses agree; and writes ``results.json``,
``results.md`` and ``results.png``. Not part of the ``vicreg`` package: it is a development tool.

Modules: :mod:`~benchmarks.references` (the implementations timed against ours),
:mod:`~benchmarks.platforms` (inputs, synchronisation and runners per framework and device),
:mod:`~benchmarks.timing` (interleaved timing), :mod:`~benchmarks.memory` (peak memory, per framework),
:mod:`~benchmarks.suite` (the grid) and :mod:`~benchmarks.report` (JSON, Markdown, PNG).
"""

from .suite import Config, quick_config, run

__all__ = ["Config", "quick_config", "run"]
