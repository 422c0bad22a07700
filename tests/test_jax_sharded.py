"""vicreg.jax across 8 CPU devices: the loss and gradient of a batch split over devices with
``jax.shard_map`` (and ``jax.pmap``) against the single-device loss and gradient, float64, 1e-9 relative.

JAX fixes its device count when it initialises, and the pytest process has already initialised it
with one CPU device, so the computations run in a child process (this file run as a script) with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and x64 enabled from the start. The child
prints one JSON object of measured relative errors and error messages; the tests below check them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DEVICES = 8
TOL = 1e-9

# name: (n, d, mesh shape, mesh axis names, axis_name the batch is split over, convention options)
CASES = {
    "gram_path": (32, 40, (8,), ("batch",), "batch", "paper"),
    "dxd_path": (64, 6, (8,), ("batch",), "batch", "official"),
    "one_row_per_device": (8, 12, (8,), ("batch",), "batch", "official"),
    "two_axes_tuple": (24, 30, (4, 2), ("data", "model"), ("data", "model"), "official"),
    "replicated_over_model": (16, 20, (4, 2), ("data", "model"), "data", "paper"),
}
OPTIONS = {
    "official": {},
    "paper": dict(sim_coeff=1.5, std_coeff=3.0, cov_coeff=0.5, variance_target=1.2, eps=1e-3, convention="paper"),
}


# --------------------------------------------------------------------------------------------------
# the child: runs with 8 devices and x64


def _pair(n, d, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = np.linspace(0.3, 2.0, d)
    z1 = rng.standard_normal((n, d)) * scale
    return z1, z1 + 0.5 * rng.standard_normal((n, d)) * scale


def _rel(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _child() -> dict:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import vicreg
    import vicreg.jax as vj

    assert jax.device_count() == DEVICES and jnp.ones(1).dtype == jnp.float64
    out: dict = {}
    facts: dict = {}
    for seed, (name, (n, d, shape, names, axis, opts)) in enumerate(CASES.items()):
        kw = OPTIONS[opts]
        z1, z2 = _pair(n, d, seed)
        mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Explicit,) * len(shape))
        rows = NamedSharding(mesh, P(axis))
        a, b = jax.device_put(z1, rows), jax.device_put(z2, rows)

        # what a user writes: vicreg_loss(axis_name=...) inside their own shard_map
        sharded = jax.shard_map(
            functools.partial(vj.vicreg_loss, axis_name=axis, **kw),
            mesh=mesh,
            in_specs=(P(axis), P(axis)),
            out_specs=P(),
        )
        loss = jax.jit(sharded)(a, b)
        grads = jax.jit(jax.grad(sharded, argnums=(0, 1)))(a, b)
        single = functools.partial(vj.vicreg_loss, **kw)
        want = jax.jit(single)(jnp.asarray(z1), jnp.asarray(z2))
        want_grads = jax.jit(jax.grad(single, argnums=(0, 1)))(jnp.asarray(z1), jnp.asarray(z2))
        # the core's NumPy analytic gradient: computed without JAX at all
        np_loss, np_grads = vicreg.value_and_grad(z1, z2, **kw)

        result = {
            "loss": _rel(loss, want),
            "loss_vs_numpy": _rel(loss, np_loss),
            "replicas_agree": max(_rel(s.data, want) for s in loss.addressable_shards),
        }
        # the gradient stays split by rows like the input (no device holds the whole gradient)
        facts[f"{name}_gradient_split_by_rows"] = all(g.sharding.spec[0] == P(axis)[0] for g in grads)
        for i in range(2):
            result[f"grad{i + 1}"] = _rel(grads[i], want_grads[i])
            result[f"grad{i + 1}_vs_numpy"] = _rel(grads[i], np_grads[i])
        terms = vj.sharded_vicreg_terms(z1, z2, mesh=mesh, axis_name=axis, **kw)
        single_terms = jax.jit(functools.partial(vj.vicreg_terms, **kw))(z1, z2)
        result["terms"] = max(_rel(t, s) for t, s in zip(terms, single_terms))
        out[name] = result

    # the convenience wrapper on an Auto mesh, with the default 1-D mesh over every device, jitted
    z1, z2 = _pair(40, 16, 99)
    want = float(vj.vicreg_loss(z1, z2))
    auto = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Auto,))
    out["wrapper"] = {
        "auto_mesh": _rel(vj.sharded_vicreg_loss(z1, z2, mesh=auto, axis_name="b"), want),
        "default_mesh": _rel(vj.sharded_vicreg_loss(z1, z2), want),
        "grad_default_mesh": _rel(
            jax.jit(jax.grad(vj.sharded_vicreg_loss))(jnp.asarray(z1), jnp.asarray(z2)),
            jax.grad(vj.vicreg_loss)(jnp.asarray(z1), jnp.asarray(z2)),
        ),
    }

    # a training step: replicated parameters, rows split. Inside shard_map the gradient with respect to
    # the replicated weights is already the global batch's (shard_map's transpose sums the devices'
    # contributions); no pmean/psum of gradients is needed. Same with jax.grad outside shard_map.
    x1, x2 = _pair(32, 10, 11)
    weights = np.random.default_rng(12).standard_normal((10, 40))
    mesh = jax.make_mesh((8,), ("batch",))

    def local(w, a, b):
        return vj.vicreg_loss(a @ w, b @ w, axis_name="batch")

    specs = (P(), P("batch"), P("batch"))
    inside = jax.jit(jax.shard_map(jax.value_and_grad(local), mesh=mesh, in_specs=specs, out_specs=(P(), P())))
    outside = jax.jit(jax.value_and_grad(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())))
    want_loss, want_grad = jax.value_and_grad(lambda w, a, b: vj.vicreg_loss(a @ w, b @ w))(weights, x1, x2)
    rows = NamedSharding(mesh, P("batch"))
    a, b = jax.device_put(x1, rows), jax.device_put(x2, rows)
    out["parameters"] = {}
    for name, step in (("grad_inside_shard_map", inside), ("grad_outside_shard_map", outside)):
        loss, grad = step(weights, a, b)
        out["parameters"][f"{name}_loss"] = _rel(loss, want_loss)
        out["parameters"][f"{name}_weights"] = _rel(grad, want_grad)

    # pmap binds the axis name as well: devices on the leading axis
    z1, z2 = _pair(16, 24, 7)
    per_device = jax.pmap(lambda x, y: vj.vicreg_loss(x, y, axis_name="i"), axis_name="i")
    losses = per_device(z1.reshape(DEVICES, -1, 24), z2.reshape(DEVICES, -1, 24))
    out["pmap"] = {"loss": max(_rel(x, vj.vicreg_loss(z1, z2)) for x in np.asarray(losses))}

    # (n, ..., d) embeddings, rows split over devices: the mean over positions, as the core computes it
    # on one device in NumPy (the Gram path at n = 16, d = 40; the d x d path at n = 64, d = 6)
    out["positions"] = {}
    mesh = jax.make_mesh((8,), ("batch",))
    for label, shape in (("gram", (16, 3, 40)), ("dxd", (64, 2, 3, 6))):
        z1, z2 = (z.reshape(shape) for z in _pair(shape[0], int(np.prod(shape[1:])), 21))
        sharded = jax.shard_map(
            functools.partial(vj.vicreg_loss, axis_name="batch"),
            mesh=mesh,
            in_specs=(P("batch"), P("batch")),
            out_specs=P(),
        )
        rows = NamedSharding(mesh, P("batch"))
        a, b = jax.device_put(z1, rows), jax.device_put(z2, rows)
        loss, grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(a, b)
        np_loss, np_grads = vicreg.value_and_grad(z1, z2)
        out["positions"][f"{label}_loss"] = _rel(loss, np_loss)
        for i in range(2):
            out["positions"][f"{label}_grad{i + 1}"] = _rel(grads[i], np_grads[i])
        out["positions"][f"{label}_wrapper"] = _rel(vj.sharded_vicreg_loss(z1, z2, mesh=mesh), np_loss)

    # K views (Gram path with 3, d x d path with 4) and the VCReg regulariser of one view, rows split: the
    # loss, terms and every view's gradient against the core's NumPy analytic gradient on one device
    out["views"] = {}
    mesh = jax.make_mesh((8,), ("batch",))
    rows = NamedSharding(mesh, P("batch"))
    for label, (n, d, k) in (("gram", (16, 40, 3)), ("dxd", (32, 6, 4))):
        rng = np.random.default_rng(k)
        base = rng.standard_normal((n, d)) * np.linspace(0.3, 2.0, d)
        views = [base + 0.5 * rng.standard_normal((n, d)) for _ in range(k)]
        kw = OPTIONS["paper"]
        sharded = jax.shard_map(
            functools.partial(vj.vicreg_loss, axis_name="batch", **kw),
            mesh=mesh,
            in_specs=(P("batch"),) * k,
            out_specs=P(),
        )
        placed = [jax.device_put(z, rows) for z in views]
        loss, grads = jax.jit(jax.value_and_grad(sharded, argnums=tuple(range(k))))(*placed)
        np_loss, np_grads = vicreg.value_and_grad(*views, **kw)
        out["views"][f"{label}_loss"] = _rel(loss, np_loss)
        for i in range(k):
            out["views"][f"{label}_grad{i + 1}"] = _rel(grads[i], np_grads[i])
        terms = vj.sharded_vicreg_terms(*views, mesh=mesh, rank_me=True, **kw)
        single = vicreg.vicreg_terms(*views, rank_me=True, **kw)
        out["views"][f"{label}_terms"] = max(_rel(t, s) for t, s in zip(terms, single))
        facts[f"views_{label}_rank_me_count"] = len(terms.rank_me)
        ranked = jax.shard_map(
            functools.partial(vj.rank_me, axis_name="batch"), mesh=mesh, in_specs=P("batch"), out_specs=P()
        )
        out["views"][f"{label}_rank_me"] = _rel(jax.jit(ranked)(placed[1]), vicreg.rank_me(views[1]))
        facts[f"views_{label}_count"] = len(grads)
        vc = {key: value for key, value in kw.items() if key != "sim_coeff"}
        vcreg = jax.shard_map(
            functools.partial(vj.vcreg_loss, axis_name="batch", **vc), mesh=mesh, in_specs=P("batch"), out_specs=P()
        )
        v_loss, v_grad = jax.jit(jax.value_and_grad(vcreg))(placed[0])
        np_v_loss, np_v_grad = vicreg.vcreg_value_and_grad(views[0], **vc)
        out["views"][f"{label}_vcreg_loss"] = _rel(v_loss, np_v_loss)
        out["views"][f"{label}_vcreg_grad"] = _rel(v_grad, np_v_grad)

    # bfloat16 rows split over devices: still computed in float32, as on one device
    z1, z2 = (jnp.asarray(z, jnp.bfloat16) for z in _pair(32, 48, 8))
    loss16 = vj.sharded_vicreg_loss(z1, z2)
    facts["bfloat16_loss_dtype"] = str(loss16.dtype)
    facts["bfloat16_vs_float64"] = _rel(loss16, vj.vicreg_loss(z1.astype(jnp.float64), z2.astype(jnp.float64)))

    # uneven split: a clear error naming the sizes
    z1, z2 = _pair(30, 8, 9)
    try:
        vj.sharded_vicreg_loss(z1, z2)
    except ValueError as err:
        facts["uneven_error"] = str(err)
    return {"errors": out, "facts": facts}


# --------------------------------------------------------------------------------------------------
# the tests: run the child once, check what it measured


# every test here on one pytest-xdist worker, so that the module-scoped fixture below runs once
pytestmark = pytest.mark.xdist_group("jax_sharded")


@pytest.fixture(scope="module")
def measured() -> dict:
    pytest.importorskip("jax")
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_sharded_loss_terms_and_gradient_equal_single_device(measured, case):
    result = measured["errors"][case]
    assert set(result) >= {"loss", "grad1", "grad2", "terms", "replicas_agree"}
    bad = {key: value for key, value in result.items() if not value < TOL}
    assert not bad, f"{case}: relative errors above {TOL}: {bad}"
    assert measured["facts"][f"{case}_gradient_split_by_rows"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["parameters", "wrapper", "pmap", "positions", "views"])
def test_parameter_gradients_wrapper_and_pmap(measured, case):
    bad = {key: value for key, value in measured["errors"][case].items() if not value < TOL}
    assert not bad, f"{case}: {bad}"


@pytest.mark.slow
def test_sharded_k_views_have_a_gradient_for_every_view(measured):
    assert measured["facts"]["views_gram_count"] == 3 and measured["facts"]["views_dxd_count"] == 4
    # the gradients; loss, terms (RankMe included), RankMe alone, VCReg loss and gradient
    assert len(measured["errors"]["views"]) == (3 + 4) + 2 * 5
    assert measured["facts"]["views_gram_rank_me_count"] == 3 and measured["facts"]["views_dxd_rank_me_count"] == 4


@pytest.mark.slow
def test_sharded_bfloat16_is_computed_in_float32(measured):
    assert measured["facts"]["bfloat16_loss_dtype"] == "float32"
    # float32 arithmetic on the bfloat16-rounded inputs, against float64 on the same inputs
    assert measured["facts"]["bfloat16_vs_float64"] < 1e-5


@pytest.mark.slow
def test_uneven_split_is_a_clear_error(measured):
    message = measured["facts"].get("uneven_error", "")
    assert "n = 30" in message and "8 devices" in message, message


if __name__ == "__main__":
    print(json.dumps(_child()))
