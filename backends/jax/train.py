"""VICReg training example in JAX: a flax NNX ResNet and expander, optax, a jitted step with the
augmentation on the device, data-parallel over all devices with ``jax.shard_map``.

Run with no arguments to train on scikit-learn's digits (CPU, a few minutes)::

    python -m backends.jax.train
    python -m backends.jax.train --std-coeff 0 --cov-coeff 0      # invariance only: collapses
    python -m backends.jax.train --data ~/cifar-10-batches-py --arch resnet18 --epochs 100

Same flags, defaults, outputs and evaluation as ``python -m backends.torch.train`` (``backends.common``):
each epoch logs the loss, its three terms and the embeddings' per-dimension std and effective rank and
writes a checkpoint (``--resume`` continues); the run ends with a linear probe and a 20-NN classifier on the
frozen encoder's features of the held-out split, against the same probe at random initialisation, in
``DIR/metrics.json`` and ``DIR/curves.png``.

The loss of the two views' embeddings ``z1``, ``z2`` (convention "official")::

    loss = sim_coeff * mean((z1 - z2)^2) + std_coeff * (v(z1) + v(z2)) / 2 + cov_coeff * (c(z1) + c(z2))
    v(z) = mean_j max(0, gamma - sqrt(var_j + eps)),    c(z) = (1/d) sum_{i != j} C_ij^2

How the pieces map to JAX:

* **Model** (:mod:`backends.jax.models`): split once with ``nnx.split`` into a static graph and two pytrees,
  the parameters and the BatchNorm statistics; the step is a pure function of those pytrees (``nnx.merge``
  inside ``jax.jit``). Train mode normalises with batch statistics and updates the running averages; the
  evaluation uses a second graph in eval mode (running averages).
* **Optimizer**: ``optax.adamw`` (default) or ``optax.lars`` (``--optimizer lars``: momentum 0.9, trust
  coefficient 0.001) with ``optax.warmup_cosine_decay_schedule`` (linear warm-up, cosine decay to 0.001 of
  the peak, as the PyTorch example). Weight decay and LARS adaptation are masked off for biases and
  normalisation parameters (every parameter with fewer than 2 dimensions).
* **Augmentation** (:mod:`backends.jax.augment`, dm-pix) runs inside the jitted step, vmapped over the
  batch with one PRNG key per image, derived from ``(seed, step)``: a resumed run replays the same views.
* **Loss**: :func:`vicreg.jax.vicreg_terms`. With several devices (``jax.device_count() > 1``) the gradient
  is computed under ``jax.shard_map`` over a 1-D mesh axis ``"batch"``: each device holds
  ``batch_size / devices`` rows, the loss is called with ``axis_name="batch"`` so it is the loss of the
  global batch, and BatchNorm averages its batch statistics over the axis (synchronised BatchNorm). A step
  then equals the single-device step on the whole batch (``tests/test_examples_jax.py`` checks it on 8 CPU
  devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``).
* **Checkpoint** ``DIR/checkpoint.msgpack``, rewritten atomically each epoch: a msgpack map (written by
  ``flax.serialization``) ``{"format": "vicreg-jax-1", "leaves": [arrays], "meta": JSON text}``. ``leaves``
  are the leaves, in ``jax.tree.leaves`` order, of ``{"params", "batch_stats", "opt_state"}`` for the
  model and optimizer that the run's flags build; ``meta`` holds the epoch, history, elapsed seconds,
  baseline accuracies and arguments. (orbax writes a directory per checkpoint from a background thread;
  the shared resume logic, ``backends.common.resolve_out``, and its atomic rename work on one file, and
  the whole state here is a few MB.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import numpy as np

from backends import common

TERM_KEYS = ("loss", "invariance", "variance", "covariance", "std_mean", "std_min")
AXIS = "batch"
CHECKPOINT_EXT = "msgpack"
CHECKPOINT_FORMAT = "vicreg-jax-1"
EVAL_CHUNK = 1024
FINAL_LR_FRACTION = 0.001  # the cosine decays to this fraction of the peak (as the official code)


def loss_options(args: argparse.Namespace) -> dict[str, float]:
    return {
        "sim_coeff": args.sim_coeff,
        "std_coeff": args.std_coeff,
        "cov_coeff": args.cov_coeff,
        "variance_target": args.variance_target,
    }


def lr_schedule(args: argparse.Namespace, total_steps: int, warmup_steps: int) -> Callable:
    """The peak ``args.lr`` after a linear warm-up of ``warmup_steps``, then cosine decay to 0.001 of the
    peak at ``total_steps``: ``optax.warmup_cosine_decay_schedule`` read one step ahead, so that step 0
    already trains at ``lr / warmup_steps`` (as ``backends.common.warmup_cosine``) instead of 0."""
    import optax

    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=args.lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=FINAL_LR_FRACTION * args.lr,
    )
    return lambda step: base(step + 1)


def decay_mask(params: Any) -> Any:
    """``True`` for weights that get weight decay (and LARS adaptation): kernels of convolutions and
    linear layers; ``False`` for biases and normalisation scales and offsets (fewer than 2 dimensions)."""
    import jax

    return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(args: argparse.Namespace, params: Any, schedule: Callable):
    import optax

    mask = decay_mask(params)
    if args.optimizer == "adamw":
        return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=args.weight_decay, mask=mask)
    if args.optimizer == "lars":
        # official settings: momentum 0.9, eta 0.001; biases and norm parameters neither decayed nor adapted
        return optax.lars(schedule, weight_decay=args.weight_decay, weight_decay_mask=mask,
                          trust_coefficient=0.001, trust_ratio_mask=mask, momentum=0.9)
    raise ValueError(f"unknown --optimizer {args.optimizer!r}")


class Trainer:
    """The model, the optimizer and the jitted functions of one run.

    ``state`` is the pytree ``{"params", "batch_stats", "opt_state"}``. ``mesh`` (a 1-D mesh with axis
    ``"batch"``) makes the step data-parallel; ``None`` runs it on one device without collectives.
    """

    def __init__(self, args: argparse.Namespace, channels: int, image_size: int, mean, std,
                 preset_name: str, total_steps: int, warmup_steps: int, mesh=None):
        import jax
        from flax import nnx

        from backends.jax.augment import preset, two_views
        from backends.jax.models import VICRegNet

        self.mesh = mesh if mesh is not None and mesh.size > 1 else None
        axis = AXIS if self.mesh is not None else None
        model = VICRegNet(args.arch, channels, image_size, args.proj_dims, axis_name=axis,
                          rngs=nnx.Rngs(args.seed))
        model.train()
        self.graph_train, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        model.eval()
        self.graph_eval = nnx.graphdef(model)
        self.schedule = lr_schedule(args, total_steps, warmup_steps)
        self.tx = build_optimizer(args, params, self.schedule)
        self.state = {"params": params, "batch_stats": batch_stats, "opt_state": self.tx.init(params)}
        self.augment = two_views(preset(preset_name, image_size, mean, std))
        self.options = loss_options(args)
        self.base_key = jax.random.key(args.seed)
        self.replicated = self.sharded = None
        if self.mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec as P

            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P(AXIS))
            self.state = jax.device_put(self.state, self.replicated)
        self._step = jax.jit(self._make_step(axis), donate_argnums=(0,))
        evaluated = lambda s: nnx.merge(self.graph_eval, s["params"], s["batch_stats"])  # noqa: E731
        self._backbone = jax.jit(lambda s, x: evaluated(s).backbone(x))
        self._embed = jax.jit(lambda s, x: evaluated(s)(x))

    def _make_step(self, axis: str | None):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        import vicreg.jax as vj

        graph, augment, options = self.graph_train, self.augment, self.options

        def grads_and_terms(params, batch_stats, images, idx, key):
            # On several devices this runs per device on its rows of idx; params and key are replicated.
            # Row r of the global batch draws its views from fold_in(key, r), on any number of devices.
            rows = idx.shape[0]
            first = 0 if axis is None else jax.lax.axis_index(axis) * rows
            keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(first + jnp.arange(rows))
            v1, v2 = augment(images[idx], keys)

            def loss_fn(p):
                model = nnx.merge(graph, p, batch_stats, copy=True)  # fresh Variables in this trace
                z1, z2 = model(v1), model(v2)  # two passes, as the official code: BN statistics per view
                terms = vj.vicreg_terms(z1, z2, axis_name=axis, **options)
                return terms.loss, (terms, nnx.state(model, nnx.BatchStat))

            (_, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return grads, terms, new_stats

        if axis is not None:
            from jax.sharding import PartitionSpec as P

            grads_and_terms = jax.shard_map(
                grads_and_terms, mesh=self.mesh,
                in_specs=(P(), P(), P(), P(AXIS), P()), out_specs=(P(), P(), P()),
            )
        #: ``(params, batch_stats, images, idx, key) -> (grads, VICRegTerms, new batch_stats)`` of the global
        #: batch ``images[idx]``, its views drawn from ``key``; sharded over the mesh when there is one.
        self.grads_and_terms = grads_and_terms

        def step(state, images, idx, key):
            grads, terms, batch_stats = grads_and_terms(
                state["params"], state["batch_stats"], images, idx, key
            )
            updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, terms

        return step

    # -- data on the device ------------------------------------------------------------------------------

    def put_images(self, images_nchw: np.ndarray):
        """``(N, C, H, W)`` NumPy images -> NHWC device array (replicated over the mesh)."""
        import jax

        x = np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1))
        return jax.device_put(x, self.replicated)  # replicated=None: the default device

    def step(self, images, idx: np.ndarray, step: int) -> dict[str, Any]:
        """One optimisation step on the training images ``images[idx]``; returns the loss terms (device
        arrays). The views' keys derive from ``(seed, step)``."""
        import jax

        idx = np.asarray(idx, dtype=np.int32)
        idx = jax.device_put(idx, self.sharded) if self.sharded is not None else idx
        key = jax.random.fold_in(self.base_key, step)
        self.state, terms = self._step(self.state, images, idx, key)
        return terms._asdict()

    def features(self, images: np.ndarray, which: str = "backbone") -> np.ndarray:
        """The eval-mode encoder (``"backbone"``) or whole network (``"embed"``) on normalised, un-augmented
        NHWC NumPy images -> NumPy features. Chunks are padded to one compiled shape and, on a mesh, split
        over its devices (eval-mode BatchNorm has no cross-row dependence)."""
        import jax

        fn = self._backbone if which == "backbone" else self._embed
        n = images.shape[0]
        ndev = self.mesh.size if self.mesh is not None else 1
        chunk = -(-min(EVAL_CHUNK, n) // ndev) * ndev
        out = []
        for i in range(0, n, chunk):
            x = images[i : i + chunk]
            if x.shape[0] < chunk:
                x = np.concatenate([x, np.zeros((chunk - x.shape[0], *x.shape[1:]), x.dtype)])
            x = jax.device_put(x, self.sharded)  # split over the mesh, or on the default device
            out.append(np.asarray(fn(self.state, x)))
        return np.concatenate(out)[:n]

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save(self, path: str, meta: dict[str, Any]) -> None:
        import jax
        from flax import serialization

        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(self.state))]
        blob = serialization.msgpack_serialize(
            {"format": CHECKPOINT_FORMAT, "leaves": leaves, "meta": json.dumps(meta)}
        )

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(blob)

        common.atomic_save(path, write)

    def load(self, path: str) -> dict[str, Any]:
        """Restore the state saved by :meth:`save`; returns its ``meta``. ``UsageError`` when the file is
        not such a checkpoint or was written by a run with another model or optimizer."""
        import jax
        from flax import serialization

        with open(path, "rb") as f:
            try:
                blob = serialization.msgpack_restore(f.read())
            except Exception as e:  # noqa: BLE001 - any decoding failure means a damaged file
                raise common.UsageError(f"--resume: {path!r} is not a readable checkpoint ({e})") from e
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise common.UsageError(f"--resume: {path!r} is not a {CHECKPOINT_FORMAT} checkpoint")
        leaves, treedef = jax.tree.flatten(self.state)
        saved = blob["leaves"]
        saved = [saved[str(i)] for i in range(len(saved))] if isinstance(saved, dict) else list(saved)
        shapes = [tuple(np.shape(a)) for a in saved]
        if shapes != [tuple(leaf.shape) for leaf in leaves]:
            raise common.UsageError(
                f"--resume: {path!r} holds a different model or optimizer than these flags build "
                "(another --arch, --proj-dims, --optimizer or data set?)"
            )
        restored = jax.tree.unflatten(
            treedef, [np.asarray(a, dtype=leaf.dtype) for a, leaf in zip(saved, leaves)]
        )
        self.state = jax.device_put(restored, self.replicated)  # replicated=None: the default device
        return json.loads(blob["meta"])


def make_mesh():
    """A 1-D mesh named ``"batch"`` over every device, or ``None`` with a single device."""
    import jax

    if jax.device_count() < 2:
        return None
    return jax.make_mesh((jax.device_count(),), (AXIS,))


def device_name() -> str:
    import jax

    devices = jax.devices()
    kind = devices[0].device_kind
    n = len(devices)
    if devices[0].platform == "cpu":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        return f"cpu ({n} XLA device{'s' if n > 1 else ''}, {cores} cores)"
    return f"{devices[0].platform} ({n} x {kind})"


log = common.log


def evaluate(trainer: Trainer, ds: common.Dataset, tr: np.ndarray, te: np.ndarray) -> dict[str, float]:
    """Linear probe and 20-NN on the frozen encoder's features of the held-out split."""
    f_tr, f_te = trainer.features(tr), trainer.features(te)
    return common.evaluate_features(ds, f_tr, f_te)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run: data, model, optimisation with monitoring and checkpoints, evaluation, outputs.
    Returns the metrics dict (empty when ``--stop-after`` interrupts it)."""
    import jax
    from tqdm.auto import tqdm

    common.resolve_optimizer_defaults(args)
    args.checkpoint_ext = CHECKPOINT_EXT
    mesh = make_mesh()
    ndev = jax.device_count()
    ds = common.load_dataset(args.data, args.image_size, args.subset)
    if len(ds.y_train) < 2:
        raise common.UsageError("need at least 2 training images")
    batch_size = min(args.batch_size, len(ds.y_train))
    if batch_size % ndev:
        raise common.UsageError(
            f"a batch of {batch_size} does not split evenly over the {ndev} devices; pass a --batch-size "
            f"divisible by {ndev}"
        )
    out, resume_from = common.resolve_out(args)
    mean = np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)

    steps_per_epoch = len(ds.y_train) // batch_size  # drop_last: every batch has batch_size rows
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    trainer = Trainer(args, ds.channels, ds.image_size, ds.mean, ds.std,
                      "digits" if ds.name == "digits" else "natural", total_steps, warmup_steps, mesh)
    images = trainer.put_images(ds.x_train)  # augmented and normalised on the device, in the step
    nhwc = lambda x: np.ascontiguousarray(((x - mean) / std).transpose(0, 2, 3, 1))
    eval_tr, eval_te = nhwc(ds.x_train), nhwc(ds.x_test)  # for evaluation: normalised, not augmented
    monitor = eval_te[:1024]

    start_epoch, history, elapsed, baseline = 0, [], 0.0, None
    if resume_from:
        meta = trainer.load(resume_from)
        start_epoch, history = meta["epoch"], meta["history"]
        elapsed, baseline = meta["seconds"], meta["baseline"]
        log(out, f"resumed from {resume_from} after epoch {start_epoch}")
    t0 = time.perf_counter()
    if baseline is None:
        baseline = evaluate(trainer, ds, eval_tr, eval_te)
    where = device_name() + (f", data-parallel over {ndev} devices" if mesh else "")
    common.log_start(out, args, ds, baseline, where)

    for epoch in range(start_epoch, args.epochs):
        if args.stop_after is not None and epoch >= args.stop_after:
            log(out, f"stopping after epoch {epoch} (--stop-after)")
            return {}
        # Everything random in an epoch (order, views) derives from (seed, epoch, step): a resume replays it.
        order = np.random.default_rng([args.seed, epoch]).permutation(len(ds.y_train))
        sums = dict.fromkeys(TERM_KEYS, 0.0)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=None)
        for i in bar:
            step = epoch * steps_per_epoch + i
            terms = trainer.step(images, order[i * batch_size : (i + 1) * batch_size], step)
            values = {k: float(v) for k, v in jax.device_get(terms).items()}
            for k in TERM_KEYS:
                sums[k] += values[k]
            bar.set_postfix(loss=f"{values['loss']:.3f}", std=f"{values['std_mean']:.3f}")
        record = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}}
        stats = common.embedding_stats(trainer.features(monitor, "embed"))
        record.update(
            eval_std_mean=stats["std_mean"], effective_rank=stats["effective_rank"],
            lr=float(trainer.schedule((epoch + 1) * steps_per_epoch - 1)),
            variance_target=args.variance_target,
        )
        history.append(record)
        common.log_epoch(out, record, args)
        meta = {
            "epoch": epoch + 1, "history": history, "seconds": elapsed + time.perf_counter() - t0,
            "baseline": baseline, "args": {k: v for k, v in vars(args).items() if k != "stop_after"},
        }
        trainer.save(common.checkpoint_path(out, CHECKPOINT_EXT), meta)

    final = evaluate(trainer, ds, eval_tr, eval_te)
    return common.finish(
        out, args, ds, history, final, baseline, seconds=elapsed + time.perf_counter() - t0,
        device=device_name(), devices=ndev,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.build_parser("jax", description=__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    try:
        return train(args)
    except common.UsageError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
