"""``python -m benchmarks.gpu_check --out DIR``: verify every CUDA path of this project in one command.

Run from a clone on a machine with an NVIDIA GPU and PyTorch, JAX and/or CuPy installed with CUDA. It
prints the device, the driver and the library versions, then runs four sections, each of which survives
the failure of the others (the error is recorded and the next section runs):

1. **tests**: the test suite's GPU cases (the ``torch-cuda``, ``jax-gpu`` and ``cupy`` parameters of the
   ``backend`` fixture, the CUDA cases of ``tests/test_torch_adapter.py`` and ``tests/test_examples_cupy.py``)
   with ``python -m pytest`` in a subprocess: pass/fail/skip counts, each failure's message, skip reasons.
2. **checks**: GPU-only correctness checks the CPU suite cannot see (the ``check_*`` functions of
   :mod:`~benchmarks.gpu_check.checks`): where every result and gradient lands, host synchronisation
   inside the loss, CUDA graphs, and precision under TF32 and JAX's default matmul precision.
3. **bench**: the benchmark suite (:mod:`benchmarks.suite`) on the GPU platforms only, forward+backward,
   float32 and bfloat16, n in {256, 2048} x d in {2048, 8192}, against the official formulation, lightly
   (when installed) and the matmul floor; its own ``results.json``/``.md``/``.png`` go to ``DIR/bench``.
4. **train**: each training example (PyTorch, CuPy, JAX) for 2 epochs on digits on the GPU; the final
   linear-probe accuracy and the time come from each run's ``metrics.json``.

It writes ``DIR/gpu_report.md`` and the JSON behind it, ``DIR/gpu_report.json`` (the Markdown is
:func:`~benchmarks.gpu_check.report.markdown` of that JSON), with every subprocess's output under
``DIR/logs``. Exit status: 0 when everything that ran passed, 1 when a check, test, benchmark case or
training run failed, 2 on a usage error or when no CUDA GPU is visible (one line says so). ``--quick`` runs
one benchmark shape, 1 training epoch and no test marked ``slow``; ``--skip`` leaves sections out.

The sections that call the libraries themselves (the environment, the checks and the benchmark) run in
child processes of their own, as the tests and the examples do, so that a CUDA error that poisons a
context, or a crash, costs one section and not the report. PyTorch, CuPy and JAX share some of these
processes, so JAX's preallocation of 75% of the GPU memory is turned off
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, unless already set), here and in every child.

Modules, one per part of the run: :mod:`~benchmarks.gpu_check.command` (the command line, the order of the
sections, the child processes), :mod:`~benchmarks.gpu_check.common` (records, guards, logged
subprocesses), :mod:`~benchmarks.gpu_check.environment` (the GPU probe and the environment section),
:mod:`~benchmarks.gpu_check.suite_run` (tests), :mod:`~benchmarks.gpu_check.checks`,
:mod:`~benchmarks.gpu_check.bench`, :mod:`~benchmarks.gpu_check.train` and
:mod:`~benchmarks.gpu_check.report` (JSON to Markdown).
"""

from .command import main

__all__ = ["main"]
