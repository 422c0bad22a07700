"""Section 2, checks: GPU-only correctness checks the CPU suite cannot see, each a ``check_*`` function
(:data:`CHECKS`) returning a record: where every result and gradient lands, host synchronisation inside
the loss, CUDA graphs, and precision under TF32 and JAX's default matmul precision.

Each check asks for its device through :func:`_torch_cuda`, :func:`_torch_device` and :func:`_jax_gpu`
(the tests replace them with the CPU to run the checks' logic without a GPU) and raises :class:`Skip`
when its library or device is missing. The precision checks' inputs are two of the precision sweep's
cases (:mod:`benchmarks.precision`), at the official width.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from ..precision import dominant, errors, relative_error, whitened
from .common import error_record, one_line, overall

#: Relative tolerance of the precision checks (float32 against float64 on the same GPU).
PRECISION_TOLERANCE = 1e-5
#: Relative tolerance of compiled (CUDA graphs) against eager: float32 rounding, the compiler reorders sums.
COMPILE_TOLERANCE = 1e-4


class Skip(Exception):
    """A check that cannot run here (its library or device is missing); the message says why."""


def _need(module: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not installed")
    return importlib.import_module(module)


def _torch_cuda() -> Any:
    torch = _need("torch")
    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA GPU")
    return torch


def _torch_device(torch: Any, index: int = 0) -> Any:
    """CUDA device ``index`` (one place to change to run the checks' logic on a CPU stand-in)."""
    return torch.device("cuda", index)


def _jax_gpu() -> tuple[Any, Any]:
    jax = _need("jax")
    try:
        return jax, jax.devices("gpu")
    except RuntimeError:
        raise Skip("jax has no GPU backend (a jaxlib without CUDA?)") from None


def _views(n: int, d: int) -> tuple[Any, Any]:
    """The benchmark's two correlated float32 views (:func:`benchmarks.platforms.host_arrays`)."""
    from ..platforms import host_arrays

    return host_arrays(n, d, seed=1)


def _result(checks: dict[str, bool], details: list[str], ok_message: str, **extra: Any) -> dict[str, Any]:
    """A check's record: ``failed`` with the details of what did not hold, else ``passed``."""
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        return {"status": "failed", "message": "; ".join(details) or ", ".join(failed), **extra}
    return {"status": "passed", "message": ok_message, **extra}


def _placement(outputs: dict[str, str], expected: str, what: str) -> dict[str, Any]:
    """Compare where each output landed (``outputs``: name -> place) with ``expected``."""
    wrong = {name: place for name, place in outputs.items() if place != expected}
    details = [f"{name} is {place}, expected {expected}" for name, place in wrong.items()]
    rows = [{"output": name, "where": place, "expected": expected} for name, place in wrong.items()]
    return _result(
        {n: n not in wrong for n in outputs},
        details,
        f"all {len(outputs)} outputs ({what}) on {expected}",
        rows=rows,
        places=outputs,
    )


def check_cupy_placement() -> dict[str, Any]:
    """CuPy arrays on the last visible GPU: ``vicreg_loss``, every field of ``vicreg_terms`` and
    ``value_and_grad``'s loss and gradients come back as CuPy arrays on that GPU.

    CuPy has no autodiff, so ``value_and_grad`` is what a CuPy training loop calls every step: a result
    created with NumPy on the host, or on the default device of a multi-GPU machine, would cost a
    transfer each step or fail later with a device mismatch."""
    cupy = _need("cupy")
    import vicreg

    k = cupy.cuda.runtime.getDeviceCount() - 1
    a, b = _views(64, 256)
    with cupy.cuda.Device(k):
        z1, z2 = cupy.asarray(a), cupy.asarray(b)
        outputs = {"vicreg_loss": vicreg.vicreg_loss(z1, z2)}
        outputs.update({f"vicreg_terms.{name}": v for name, v in vicreg.vicreg_terms(z1, z2)._asdict().items()})
        loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
        outputs.update({"value_and_grad loss": loss, "gradient of z1": g1, "gradient of z2": g2})

    def place(x: Any) -> str:
        return f"cupy GPU {x.device.id}" if isinstance(x, cupy.ndarray) else type(x).__name__

    return _placement({name: place(x) for name, x in outputs.items()}, f"cupy GPU {k}", "the core on CuPy")


def check_torch_placement() -> dict[str, Any]:
    """torch CUDA tensors on the last visible GPU (called with the default device left at GPU 0): the
    core's loss and its autograd gradients, the core's ``value_and_grad``, and ``vicreg.torch.VICRegLoss``
    (its terms, and ``backward()``'s gradients, float32 and bfloat16) all stay on the inputs' GPU;
    bfloat16 inputs give a float32 loss and bfloat16 gradients, as documented.

    Any tensor the loss makes itself (a constant, a mask, an index) must be created on the inputs' device:
    one made on the default device would fail or copy on a multi-GPU machine."""
    torch = _torch_cuda()
    import vicreg
    import vicreg.torch as vt

    dev = _torch_device(torch, torch.cuda.device_count() - 1)
    a, b = _views(64, 256)

    def leaves(dtype: Any) -> tuple[Any, Any]:
        return (
            torch.tensor(a, device=dev, dtype=dtype, requires_grad=True),
            torch.tensor(b, device=dev, dtype=dtype, requires_grad=True),
        )

    z1, z2 = leaves(torch.float32)
    outputs: dict[str, Any] = {}
    loss = vicreg.vicreg_loss(z1, z2)
    outputs.update(
        {
            "core vicreg_loss": loss,
            **dict(zip(("core autograd grad z1", "core autograd grad z2"), torch.autograd.grad(loss, (z1, z2)))),
        }
    )
    vloss, (g1, g2) = vicreg.value_and_grad(z1.detach(), z2.detach())
    outputs.update({"core value_and_grad loss": vloss, "core value_and_grad g1": g1, "core value_and_grad g2": g2})
    module = vt.VICRegLoss()
    outputs.update({f"VICRegLoss.terms().{k}": v for k, v in module.terms(z1, z2)._asdict().items()})
    dtypes: dict[str, tuple[str, str]] = {}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        z1, z2 = leaves(dtype)
        loss = module(z1, z2)
        loss.backward()
        outputs.update(
            {
                f"VICRegLoss {name} loss": loss,
                f"VICRegLoss {name} z1.grad": z1.grad,
                f"VICRegLoss {name} z2.grad": z2.grad,
            }
        )
        dtypes[f"VICRegLoss {name} loss"] = (str(loss.dtype), "torch.float32")
        dtypes[f"VICRegLoss {name} z1.grad"] = (str(z1.grad.dtype), f"torch.{name}")
    record = _placement(
        {k: str(v.device) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in outputs.items()},
        str(dev),
        "the core and vicreg.torch on torch CUDA",
    )
    bad_dtypes = [f"{k} is {got}, expected {want}" for k, (got, want) in dtypes.items() if got != want]
    if bad_dtypes:
        placed = record["status"] == "passed"
        record["status"] = "failed"
        record["message"] = "; ".join(([] if placed else [record["message"]]) + bad_dtypes)
    record["dtypes"] = {k: got for k, (got, _) in dtypes.items()}
    return record


def check_jax_placement() -> dict[str, Any]:
    """JAX arrays committed to the last visible GPU: the core's ``vicreg_loss`` and ``value_and_grad``,
    and ``vicreg.jax.vicreg_loss`` / ``vicreg_terms`` under ``jax.jit(jax.value_and_grad(...))``, return
    arrays on that GPU.

    A result on another device (the default one, or the host through a NumPy detour) would be moved back
    every step and, inside ``jit``, would be a cross-device transfer in the compiled step."""
    jax, gpus = _jax_gpu()
    import jax.numpy as jnp

    import vicreg
    import vicreg.jax as vj

    dev = gpus[-1]
    a, b = _views(64, 256)
    z1, z2 = jax.device_put(jnp.asarray(a), dev), jax.device_put(jnp.asarray(b), dev)
    outputs: dict[str, Any] = {"core vicreg_loss": vicreg.vicreg_loss(z1, z2)}
    loss, (g1, g2) = vicreg.value_and_grad(z1, z2)
    outputs.update({"core value_and_grad loss": loss, "core value_and_grad g1": g1, "core value_and_grad g2": g2})
    loss, (g1, g2) = jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1)))(z1, z2)
    outputs.update({"vicreg.jax loss (jit)": loss, "vicreg.jax grad z1 (jit)": g1, "vicreg.jax grad z2 (jit)": g2})
    terms = jax.jit(vj.vicreg_terms)(z1, z2)
    outputs.update({f"vicreg.jax.vicreg_terms.{k}": v for k, v in terms._asdict().items()})

    def place(x: Any) -> str:
        return ", ".join(sorted(str(d) for d in x.devices())) if isinstance(x, jax.Array) else type(x).__name__

    return _placement({k: place(v) for k, v in outputs.items()}, str(dev), "the core and vicreg.jax on a JAX GPU")


def _torch_forward_backward(loss_fn: Any, z1: Any, z2: Any) -> None:
    loss = loss_fn(z1, z2)
    loss.backward()


def check_torch_no_host_sync() -> dict[str, Any]:
    """Forward+backward of ``vicreg.torch.VICRegLoss()`` on CUDA tensors synchronises the host with the GPU
    at most once: on the Gram path (n < d), the one read of the flags that choose the number of exact
    columns (none, 8 or n - 1), in the forward pass; on the ``d x d`` path, never. Counted with
    ``torch.cuda.set_sync_debug_mode("warn")`` around one call after a warm-up, for both backward modes; the
    module keeps its defaults (``gather_distributed=True``) with no process group, the common single-GPU case.

    A host synchronisation inside the loss (an ``.item()``, a Python ``if`` on a tensor, a copy to the
    CPU) makes the CPU wait until the GPU has drained its queue, so the next step's kernels cannot be
    queued while this one runs: the GPU idles for the launch latency of every kernel after it. PyTorch's
    sync debug mode catches the synchronising calls it knows of (not those inside ``torch.distributed``)."""
    import warnings

    torch = _torch_cuda()
    import vicreg.torch as vt

    dev = _torch_device(torch)
    rows, details, ok = [], [], {}
    for n, d, allowed in ((256, 2048, 1), (1024, 128, 0)):
        a, b = _views(n, d)
        for backward in ("analytic", "autograd"):
            loss_fn = vt.VICRegLoss(backward=backward)

            def leaves() -> tuple[Any, Any]:  # called within this iteration only
                return (
                    torch.tensor(a, device=dev, requires_grad=True),  # noqa: B023
                    torch.tensor(b, device=dev, requires_grad=True),  # noqa: B023
                )

            _torch_forward_backward(loss_fn, *leaves())  # warm-up: one-time library initialisation
            z1, z2 = leaves()
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    _torch_forward_backward(loss_fn, z1, z2)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            rows.append({"n x d": f"{n} x {d}", "backward": backward, "host syncs": len(syncs), "allowed": allowed})
            ok[f"{n}x{d}-{backward}"] = len(syncs) <= allowed
            if len(syncs) > allowed:
                first = one_line(syncs[0].message, 200)
                details.append(f"{n} x {d}, backward={backward!r}: {len(syncs)} syncs: {first}")
    summary = f"at most one host synchronisation (the exact-column flags) in {len(rows)} calls"
    return _result(ok, details, summary, rows=rows)


def _loss_and_grads(step: Callable[[Any, Any], Any], params: list[Any], x1: Any, x2: Any) -> tuple[float, list[Any]]:
    for p in params:
        p.grad = None
    loss = step(x1, x2)
    loss.backward()
    # copies: the outputs of a CUDA graph are overwritten by its next replay
    return float(loss.detach()), [p.grad.detach().clone() for p in params]


def _flat(torch: Any, tensors: list[Any]) -> Any:
    return torch.cat([t.reshape(-1) for t in tensors]).double().cpu().numpy()


def check_torch_cuda_graphs(steps: int = 5) -> dict[str, Any]:
    """A training step containing ``vicreg.torch.VICRegLoss`` (a small MLP on two views, loss, backward),
    compiled with ``torch.compile(mode="reduce-overhead")`` (inductor with CUDA graphs), gives the eager
    loss and parameter gradients at every step, recording and replays included, with CUDA graphs actually
    used (inductor is told to raise instead of silently falling back).

    A CUDA graph replays recorded kernels on static buffers: a loss that synchronises, creates CPU
    tensors, or keeps Python state between calls would make inductor skip the graphs (losing their
    launch-overhead savings) or replay stale values."""
    torch = _torch_cuda()
    import torch._inductor.config as inductor_config

    import vicreg.torch as vt

    dev = _torch_device(torch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1024)).to(dev)
    params = list(model.parameters())
    loss_fn = vt.VICRegLoss()

    def step(x1: Any, x2: Any) -> Any:
        return loss_fn(model(x1), model(x2))

    compiled = torch.compile(step, mode="reduce-overhead")
    # a skipped CUDA graph raises, with inductor's reason, instead of silently running without graphs
    strict = (
        inductor_config.patch({"triton.cudagraph_or_error": True})
        if hasattr(inductor_config.triton, "cudagraph_or_error")
        else contextlib.nullcontext()
    )
    rows, details = [], []
    with strict:
        for i in range(steps):
            g = torch.Generator(device=dev).manual_seed(i)
            x1 = torch.randn(128, 64, device=dev, generator=g)
            x2 = x1 + 0.1 * torch.randn(128, 64, device=dev, generator=g)
            eager_loss, eager_grads = _loss_and_grads(step, params, x1, x2)
            torch.compiler.cudagraph_mark_step_begin()
            try:
                comp_loss, comp_grads = _loss_and_grads(compiled, params, x1, x2)
            except Exception as exc:
                raised = one_line(f"{type(exc).__name__}: {exc}", 400)
                details.append(f"step {i + 1}: the compiled step raised {raised}")
                break
            # one relative error over all parameters: some entries (the last bias) are 0 up to rounding,
            # the loss being invariant to a shift of the embeddings' columns
            grad_err = relative_error(_flat(torch, comp_grads), _flat(torch, eager_grads))
            rows.append(
                {
                    "step": i + 1,
                    "eager loss": eager_loss,
                    "compiled loss": comp_loss,
                    "loss error": relative_error(comp_loss, eager_loss),
                    "gradient error": grad_err,
                }
            )
    worst = max([max(r["loss error"], r["gradient error"]) for r in rows], default=float("nan"))
    if rows and worst > COMPILE_TOLERANCE:
        details.append(f"compiled differs from eager by {worst:.1e} (relative) > {COMPILE_TOLERANCE:g}")
    return _result(
        {"ran": len(rows) == steps, "close": worst <= COMPILE_TOLERANCE},
        details,
        f"{steps} steps under CUDA graphs equal eager to {worst:.1e} (relative, tolerance {COMPILE_TOLERANCE:g})",
        rows=rows,
        worst_error=worst,
    )


def adversarial_cases() -> dict[str, tuple[Any, Any]]:
    """The precision checks' inputs, float64 on the host: two of the precision sweep's cases
    (:mod:`benchmarks.precision`) at the official width (n = 256, d = 8192)."""
    return {
        "one dominant dimension (std 1000), 256 x 8192": dominant(256, 8192, 1000.0),
        "nearly whitened (std 100), 256 x 8192": whitened(256, 8192, 100.0),
    }


def _precision_rows(
    cases: dict[str, tuple[Any, Any]],
    reference: Callable,
    entries: dict[str, tuple[str, Callable]],
    run: Callable,
    reduced: Callable[[], Any],
    full: Callable[[], Any],
    reduced_label: str,
) -> list[dict[str, Any]]:
    """For each case and entry point ``(role, fn)``: the float32 errors against ``reference`` (float64,
    same device) under the user's reduced matmul precision (``reduced()``, a context manager) and, for
    comparison, at full float32 precision (``full()``). ``run(fn, z1, z2)`` -> (loss, g1, g2) on the host."""
    rows = []
    for case, (z1, z2) in cases.items():
        expected = reference(z1, z2)
        for entry, (role, fn) in entries.items():
            with reduced():
                loss_err, grad_err = errors(run(fn, z1, z2), expected)
            with full():
                full_loss_err, full_grad_err = errors(run(fn, z1, z2), expected)
            ok = max(loss_err, grad_err) <= PRECISION_TOLERANCE
            rows.append(
                {
                    "case": case,
                    "entry point": entry,
                    "role": role,
                    f"loss error, {reduced_label}": loss_err,
                    f"gradient error, {reduced_label}": grad_err,
                    "loss error, full float32": full_loss_err,
                    "gradient error, full float32": full_grad_err,
                    "within 1e-5": ok if role == "checked" else f"{'yes' if ok else 'no'} (not judged)",
                }
            )
    return rows


def _precision_result(rows: list[dict[str, Any]], reduced_label: str, extra: dict[str, Any]) -> dict[str, Any]:
    checked = [r for r in rows if r["role"] == "checked"]
    details = [
        f"{r['entry point']} on {r['case']}: loss error {r[f'loss error, {reduced_label}']:.1e}, "
        f"gradient error {r[f'gradient error, {reduced_label}']:.1e} > {PRECISION_TOLERANCE:g}"
        for r in checked
        if r["within 1e-5"] is not True
    ]
    worst = max(
        (max(r[f"loss error, {reduced_label}"], r[f"gradient error, {reduced_label}"]) for r in checked),
        default=float("nan"),
    )
    return _result(
        {str(i): r["within 1e-5"] is True for i, r in enumerate(checked)},
        details,
        f"worst float32 error {worst:.1e} <= {PRECISION_TOLERANCE:g} ({reduced_label})",
        rows=rows,
        worst_error=worst,
        **extra,
    )


@contextlib.contextmanager
def _tf32(torch: Any, on: bool):
    """Set TF32 the way a user does (``allow_tf32`` and the float32 matmul precision), then restore
    both, and the newer ``fp32_precision`` switch that they also set, where torch has it."""
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, torch.get_float32_matmul_precision(), getattr(matmul, "fp32_precision", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch warns that these are the legacy switches
        matmul.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matmul.allow_tf32 = saved[0]
            torch.set_float32_matmul_precision(saved[1])
            if saved[2] is not None:
                matmul.fp32_precision = saved[2]


def check_torch_tf32_precision() -> dict[str, Any]:
    """With TF32 switched on globally by the user (``torch.backends.cuda.matmul.allow_tf32 = True`` and
    ``torch.set_float32_matmul_precision("high")``), the float32 loss and gradients of
    ``vicreg.torch.VICRegLoss()`` and of ``vicreg.vicreg_loss`` on torch tensors (both with the analytic
    backward) on adversarial inputs stay within 1e-5 (relative) of float64 computed on the same GPU.
    ``VICRegLoss(backward="autograd")``, whose backward products autograd runs at the global setting,
    is measured alongside for information, and every entry also at full float32.

    TF32 rounds each product's inputs to 10 mantissa bits (about 5e-4 relative). The covariance term
    sums squares of large products of which only a small part survives (the off-diagonal part, after
    the diagonal's much larger share is removed), so errors of that size in the products ruin it,
    unless the loss computes its products at full float32 precision whatever the global setting."""
    torch = _torch_cuda()
    import numpy as np

    import vicreg
    import vicreg.torch as vt

    module = vt.VICRegLoss()
    dev = _torch_device(torch)

    def run(fn: Callable, z1: Any, z2: Any, dtype: Any = torch.float32) -> tuple[float, Any, Any]:
        a = torch.tensor(z1, dtype=dtype, device=dev, requires_grad=True)
        b = torch.tensor(z2, dtype=dtype, device=dev, requires_grad=True)
        loss = fn(a, b)
        g1, g2 = torch.autograd.grad(loss, (a, b))
        return float(loss.detach()), g1.double().cpu().numpy(), g2.double().cpu().numpy()

    cases = adversarial_cases()
    reference_check = {}
    for case, (z1, z2) in cases.items():  # the float64 GPU reference against NumPy's float64 core
        loss, (g1, g2) = vicreg.value_and_grad(np.asarray(z1), np.asarray(z2))
        reference_check[case] = max(errors(run(module, z1, z2, torch.float64), (float(loss), g1, g2)))
    rows = _precision_rows(
        cases,
        lambda z1, z2: run(module, z1, z2, torch.float64),
        {
            "vicreg.torch.VICRegLoss()": ("checked", module),
            "vicreg.vicreg_loss": ("checked", vicreg.vicreg_loss),
            'vicreg.torch.VICRegLoss(backward="autograd")': ("info", vt.VICRegLoss(backward="autograd")),
        },
        run,
        lambda: _tf32(torch, True),
        lambda: _tf32(torch, False),
        "TF32 on",
    )
    record = _precision_result(rows, "TF32 on", {"float64_gpu_vs_numpy": reference_check})
    bad_reference = {c: e for c, e in reference_check.items() if not e <= 1e-9}
    if bad_reference:
        record["status"] = "failed"
        record["message"] += f"; the float64 GPU result differs from NumPy's float64 by {bad_reference}"
    return record


def check_jax_default_precision() -> dict[str, Any]:
    """With ``jax.default_matmul_precision`` left at its default, ``vicreg.jax.vicreg_loss``'s float32
    loss and gradients (``jax.jit(jax.value_and_grad(...))``) on adversarial inputs stay within 1e-5
    (relative) of float64 on the same GPU, and so do the core's ``value_and_grad`` on JAX arrays; every
    entry is also measured at ``"highest"`` precision.

    XLA's default precision for float32 products on GPUs with tensor cores may use TF32 (or bfloat16
    passes on TPUs), which would ruin the covariance term as in the PyTorch check; ``vicreg.jax``
    and the core compute their products at ``"highest"`` precision for that reason."""
    jax, gpus = _jax_gpu()
    import jax.numpy as jnp
    import numpy as np

    import vicreg
    import vicreg.jax as vj

    dev = gpus[0]

    def run(fn: Callable, z1: Any, z2: Any, dtype: Any = jnp.float32) -> tuple[float, Any, Any]:
        a, b = (jax.device_put(jnp.asarray(z, dtype=dtype), dev) for z in (z1, z2))
        loss, (g1, g2) = fn(a, b)
        return float(loss), np.asarray(g1, np.float64), np.asarray(g2, np.float64)

    def reference(z1: Any, z2: Any) -> tuple[float, Any, Any]:
        with jax.enable_x64(True):
            return run(jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1))), z1, z2, jnp.float64)

    adapter = jax.jit(jax.value_and_grad(vj.vicreg_loss, argnums=(0, 1)))
    rows = _precision_rows(
        adversarial_cases(),
        reference,
        {
            "vicreg.jax.vicreg_loss (jit, value_and_grad)": ("checked", adapter),
            "vicreg.value_and_grad (core) on JAX arrays": ("checked", vicreg.value_and_grad),
        },
        run,
        contextlib.nullcontext,
        lambda: jax.default_matmul_precision("highest"),
        "default precision",
    )
    return _precision_result(
        rows, "default precision", {"default_matmul_precision": jax.config.jax_default_matmul_precision}
    )


CHECKS: tuple[Callable[[], dict[str, Any]], ...] = (
    check_cupy_placement,
    check_torch_placement,
    check_jax_placement,
    check_torch_no_host_sync,
    check_torch_cuda_graphs,
    check_torch_tf32_precision,
    check_jax_default_precision,
)


def run_check(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One check's record: name, what it verifies (its docstring's first paragraph), why (the second),
    status (passed, failed, skipped, error), message, seconds and what it measured."""
    name = fn.__name__.removeprefix("check_")
    paragraphs = (fn.__doc__ or "").strip().split("\n\n")
    t0 = time.perf_counter()
    print(f"check {name} ...", flush=True)
    try:
        record = fn()
    except Skip as exc:
        record = {"status": "skipped", "message": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        record = error_record(exc)
        record["message"] = record.pop("error")
    record = {
        "name": name,
        "what": one_line(paragraphs[0], 2000),
        "why": one_line(paragraphs[1], 2000) if len(paragraphs) > 1 else "",
        **record,
        "seconds": time.perf_counter() - t0,
    }
    print(f"check {name}: {record['status']}: {record.get('message', '')}", flush=True)
    return record


def section_checks(out: str, quick: bool) -> dict[str, Any]:
    """Every function of :data:`CHECKS`, each guarded; failed when one failed or raised."""
    checks = [run_check(fn) for fn in CHECKS]
    return {"status": overall(c["status"] for c in checks), "checks": checks}
