"""VICReg training example in JAX: a flax NNX ResNet and expander, optax, a jitted step with the
augmentation on the device, data-parallel over all devices with ``jax.shard_map``.

Run with no arguments to train on scikit-learn's digits (CPU, a few minutes)::

    python -m backends.jax.train
    python -m backends.jax.train --std-coeff 0 --cov-coeff 0      # invariance only: collapses
    python -m backends.jax.train --data ~/cifar-10-batches-py --arch resnet18 --epochs 100

Several hosts: start the same command on every host with the coordinator's address, the number of
processes and each one's id in the environment (``jax.distributed.initialize`` is then called before
anything else; under Slurm or Open MPI with several tasks it detects them itself)::

    # on host 0 (10.0.0.1) and host 1, one process per host, each with its local GPUs:
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 python -m backends.jax.train ...
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python -m backends.jax.train ...
    srun --nodes=2 --ntasks-per-node=1 python -m backends.jax.train ...         # Slurm

The mesh then spans every device of every host; each host loads the data set, keeps the images on its
own devices, and feeds only its devices' rows of every global batch (``jax.make_array_from_callback``).
Only process 0 logs, evaluates (on its first device) and writes files; the checkpoint it reads on
``--resume`` reaches the other hosts by ``multihost_utils.broadcast_one_to_all``, so they need not share
its file system. Without that environment nothing of this happens. (Tested here with two processes on one
machine, over JAX's CPU collectives; not across machines.)

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
* **Optimizer**: ``optax.lars`` (default: momentum 0.9, trust coefficient 0.001) or ``optax.adamw``
  (``--optimizer adamw``), with ``optax.warmup_cosine_decay_schedule`` (linear warm-up, cosine decay to 0.001 of
  the peak, as the PyTorch example). Weight decay and LARS adaptation are masked off for biases and
  normalisation parameters (every parameter with fewer than 2 dimensions).
* **Augmentation** (:mod:`backends.jax.augment`, dm-pix) runs inside the jitted step, vmapped over the
  batch with one PRNG key per image, derived from ``(seed, epoch, image index)``: a resumed run replays
  the same views, and they do not depend on how the batch is split over devices or hosts.
* **Loss**: :func:`vicreg.jax.vicreg_terms`. With several devices (``jax.device_count() > 1``) the gradient
  is computed under ``jax.shard_map`` over a 1-D mesh axis ``"batch"``: each device holds
  ``batch_size / devices`` rows (``--batch-size`` is the global batch), the loss is called with
  ``axis_name="batch"`` so it is the loss of the global batch, and BatchNorm averages its batch statistics
  over the axis (synchronised BatchNorm). A step
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
from collections.abc import Callable
from typing import Any

from backends import common
from backends.common import cli, launch

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
        return optax.lars(
            schedule,
            weight_decay=args.weight_decay,
            weight_decay_mask=mask,
            trust_coefficient=0.001,
            trust_ratio_mask=mask,
            momentum=0.9,
        )
    raise ValueError(f"unknown --optimizer {args.optimizer!r}")


class Trainer:
    """The model, the optimizer and the jitted functions of one run.

    ``state`` is the pytree ``{"params", "batch_stats", "opt_state"}``. ``mesh`` (a 1-D mesh with axis
    ``"batch"``) makes the step data-parallel; ``None`` runs it on one device without collectives.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        channels: int,
        image_size: int,
        mean,
        std,
        preset_name: str,
        total_steps: int,
        warmup_steps: int,
        mesh=None,
    ):
        import jax
        from flax import nnx

        from backends.jax.augment import preset, two_views
        from backends.jax.models import VICRegNet

        self.args = args
        self.mesh = mesh if mesh is not None and mesh.size > 1 else None
        axis = AXIS if self.mesh is not None else None
        model = VICRegNet(args.arch, channels, image_size, args.proj_dims, axis_name=axis, rngs=nnx.Rngs(args.seed))
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
            from jax.sharding import NamedSharding
            from jax.sharding import PartitionSpec as P

            self.replicated = NamedSharding(self.mesh, P())
            self.sharded = NamedSharding(self.mesh, P(AXIS))
            self.state = self.replicate(jax.device_get(self.state))
        self._step = jax.jit(self._make_step(axis), donate_argnums=(0,))
        evaluated = lambda s: nnx.merge(self.graph_eval, s["params"], s["batch_stats"])  # noqa: E731
        self._backbone = jax.jit(lambda s, x: evaluated(s).backbone(x))
        self._embed = jax.jit(lambda s, x: evaluated(s)(x))

    def _make_step(self, axis: str | None):
        import jax
        import optax
        from flax import nnx

        import vicreg.jax as vj

        graph, augment, options = self.graph_train, self.augment, self.options

        def grads_and_terms(params, batch_stats, images, idx, key):
            # On several devices this runs per device on its rows of idx; params and key are replicated.
            # Image i draws its views from fold_in(key, i): the same on any number of devices or hosts.
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
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
                grads_and_terms,
                mesh=self.mesh,
                in_specs=(P(), P(), P(), P(AXIS), P()),
                out_specs=(P(), P(), P()),
            )
        #: ``(params, batch_stats, images, idx, key) -> (grads, VICRegTerms, new batch_stats)`` of the global
        #: batch ``images[idx]``, image i's views drawn from ``fold_in(key, i)``; sharded over the mesh when
        #: there is one.
        self.grads_and_terms = grads_and_terms

        def step(state, images, idx, key):
            grads, terms, batch_stats = grads_and_terms(state["params"], state["batch_stats"], images, idx, key)
            updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, terms

        return step

    # -- data on the device ------------------------------------------------------------------------------

    def replicate(self, tree: Any) -> Any:
        """Host values, the same on every process -> arrays on every device of the mesh (of every host:
        ``jax.make_array_from_callback`` asks each process only for its own devices' copies); on the
        default device without a mesh."""
        import jax
        import numpy as np

        if self.replicated is None:
            return jax.device_put(tree)
        return jax.tree.map(
            lambda a: jax.make_array_from_callback(np.shape(a), self.replicated, lambda i: np.asarray(a)[i]), tree
        )

    def put_images(self, images_nchw):
        """``(N, C, H, W)`` NumPy images -> NHWC device array (replicated over the mesh)."""
        import numpy as np

        return self.replicate(np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1)))

    def shard_rows(self, rows):
        """A global batch's rows (the same NumPy array on every process) -> an array split over the mesh's
        ``"batch"`` axis, each process placing only its own devices' rows: each host feeds its shard."""
        import jax

        if self.sharded is None:
            return rows
        return jax.make_array_from_callback(rows.shape, self.sharded, lambda i: rows[i])

    def step(self, images, idx, epoch: int) -> dict[str, Any]:
        """One optimisation step on the training images ``images[idx]`` (``idx``: the global batch's image
        indices); returns the loss terms (device arrays, replicated). Image ``i``'s views derive from
        ``(seed, epoch, i)``."""
        import jax
        import numpy as np

        idx = self.shard_rows(np.asarray(idx, dtype=np.int32))
        key = jax.random.fold_in(self.base_key, epoch)
        self.state, terms = self._step(self.state, images, idx, key)
        return terms._asdict()

    def local_state(self) -> Any:
        """This process's copy of the (replicated) state, on its first device: what process 0 evaluates
        and saves when the mesh spans other hosts."""
        import jax

        device = jax.local_devices()[0]
        return jax.tree.map(lambda a: jax.device_put(a.addressable_data(0), device), self.state)

    def features(self, images, which: str = "backbone"):
        """The eval-mode encoder (``"backbone"``) or whole network (``"embed"``) on normalised, un-augmented
        NHWC NumPy images -> NumPy features. Chunks are padded to one compiled shape and, on a one-host
        mesh, split over its devices (eval-mode BatchNorm has no cross-row dependence). When the mesh spans
        several hosts, the calling process computes them alone on its first device."""
        import jax
        import numpy as np

        fn = self._backbone if which == "backbone" else self._embed
        state, sharding = self.state, self.sharded
        if jax.process_count() > 1:
            state, sharding = self.local_state(), jax.local_devices()[0]
        n = images.shape[0]
        ndev = self.mesh.size if self.mesh is not None and jax.process_count() == 1 else 1
        chunk = -(-min(EVAL_CHUNK, n) // ndev) * ndev
        out = []
        for i in range(0, n, chunk):
            x = images[i : i + chunk]
            if x.shape[0] < chunk:
                x = np.concatenate([x, np.zeros((chunk - x.shape[0], *x.shape[1:]), x.dtype)])
            x = jax.device_put(x, sharding)  # split over the mesh, or on one device
            out.append(np.asarray(fn(state, x)))
        return np.concatenate(out)[:n]

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save(self, path: str, meta: dict[str, Any]) -> None:
        """Write the state (this process's copy) and ``meta`` to ``path``, atomically."""
        import jax
        import numpy as np
        from flax import serialization

        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(self.local_state()))]
        blob = serialization.msgpack_serialize(
            {"format": CHECKPOINT_FORMAT, "leaves": leaves, "meta": json.dumps(meta)}
        )

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(blob)

        common.atomic_save(path, write)

    def load(self, path: str | None) -> dict[str, Any] | None:
        """Restore the state saved by :meth:`save` and return its ``meta``. ``UsageError`` when the file is
        not such a checkpoint or was written by a run with another model or optimizer.

        With several processes every one calls it: process 0 with the ``path`` it reads, the others with
        ``None``; they receive the state from process 0 (``broadcast_one_to_all``) and get ``None``."""
        import jax
        import numpy as np

        restored, meta = None, None
        if path is not None:
            restored, meta = self._read(path)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            template = restored if restored is not None else jax.device_get(self.local_state())
            restored = multihost_utils.broadcast_one_to_all(template)
        self.state = self.replicate(jax.tree.map(np.asarray, restored))
        return meta

    def _read(self, path: str) -> tuple[Any, dict[str, Any]]:
        import jax
        import numpy as np
        from flax import serialization

        with open(path, "rb") as f:
            try:
                blob = serialization.msgpack_restore(f.read())
            except Exception as e:
                raise common.UsageError(f"--resume: {path!r} is not a readable checkpoint ({e})") from e
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise common.UsageError(f"--resume: {path!r} is not a {CHECKPOINT_FORMAT} checkpoint")
        meta = json.loads(blob["meta"])
        common.check_resumed_flags(meta.get("args", {}), self.args, path)
        leaves, treedef = jax.tree.flatten(self.state)
        saved = blob["leaves"]
        saved = [saved[str(i)] for i in range(len(saved))] if isinstance(saved, dict) else list(saved)
        shapes = [tuple(np.shape(a)) for a in saved]
        if shapes != [tuple(leaf.shape) for leaf in leaves]:
            raise common.UsageError(
                f"--resume: {path!r} holds a different model or optimizer than these flags build "
                "(another --arch, --proj-dims, --optimizer or data set?)"
            )
        restored = jax.tree.unflatten(treedef, [np.asarray(a, dtype=leaf.dtype) for a, leaf in zip(saved, leaves)])
        return restored, meta


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
    hosts = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if devices[0].platform == "cpu":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        return f"cpu ({n} XLA device{'s' if n > 1 else ''}{hosts}, {cores} cores)"
    return f"{devices[0].platform} ({n} x {kind}{hosts})"


def initialize_distributed(env: launch.Launch) -> None:
    """``jax.distributed.initialize`` for a multi-host launch (:func:`backends.common.launch.jax_multihost`),
    before any other JAX call; nothing for one process."""
    import jax

    if not env.is_distributed or jax.distributed.is_initialized():
        return
    if env.source == "JAX_COORDINATOR_ADDRESS":  # JAX reads the address itself; the rest is ours
        jax.distributed.initialize(num_processes=env.world_size, process_id=env.rank)
    else:  # Slurm, Open MPI: JAX detects everything
        jax.distributed.initialize()


def local_values(tree: Any) -> dict[str, float]:
    """Replicated device scalars -> Python floats, from this process's copy (a mesh may span other hosts)."""
    import jax

    return {k: float(v) for k, v in jax.device_get(jax.tree.map(lambda a: a.addressable_data(0), tree)).items()}


def log(out: str | None, line: str) -> None:
    common.log(out, line)  # looked up when called: the command line loads no NumPy


def evaluate(trainer: Trainer, ds: common.Dataset, tr, te) -> dict[str, float]:
    """Linear probe and 20-NN on the frozen encoder's features of the held-out split."""
    f_tr, f_te = trainer.features(tr), trainer.features(te)
    return common.evaluate_features(ds, f_tr, f_te)


def train(args: argparse.Namespace, env: launch.Launch | None = None) -> dict[str, Any]:
    """The whole run: data, model, optimisation with monitoring and checkpoints, evaluation, outputs.
    ``env``: the multi-host launch (default: read from the environment). Returns the metrics dict on
    process 0; ``{}`` on the others and when ``--stop-after`` interrupts it."""
    env = env or launch.jax_multihost()
    initialize_distributed(env)
    import jax

    common.resolve_optimizer_defaults(args)
    args.checkpoint_ext = CHECKPOINT_EXT
    is_main = jax.process_index() == 0
    out = common.resolve_out(args)[0] if is_main else None
    with common.removed_on_failure(out, CHECKPOINT_EXT):
        return _train(args, out, is_main)


def _train(args: argparse.Namespace, out: str | None, is_main: bool) -> dict[str, Any]:
    import jax
    import numpy as np
    from tqdm.auto import tqdm

    mesh = make_mesh()
    ndev, nproc = jax.device_count(), jax.process_count()
    ds = common.load_dataset(args.data, args.image_size, args.subset)
    n_train, batch_size = len(ds.y_train), args.batch_size
    if batch_size > n_train:
        raise common.UsageError(
            f"--batch-size {batch_size} is larger than the {n_train} training images of {ds.name}; pass a smaller one"
        )
    if batch_size % ndev:
        raise common.UsageError(
            f"a batch of {batch_size} does not split evenly over the {ndev} devices; pass a --batch-size "
            f"divisible by {ndev}"
        )
    resume_from = args.resume if is_main else None
    mean = np.asarray(ds.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(ds.std, np.float32).reshape(1, -1, 1, 1)

    steps_per_epoch = n_train // batch_size  # drop_last: every batch has batch_size rows
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    trainer = Trainer(
        args,
        ds.channels,
        ds.image_size,
        ds.mean,
        ds.std,
        "digits" if ds.name == "digits" else "natural",
        total_steps,
        warmup_steps,
        mesh,
    )
    images = trainer.put_images(ds.x_train)  # augmented and normalised on the device, in the step
    nhwc = lambda x: np.ascontiguousarray(((x - mean) / std).transpose(0, 2, 3, 1))  # noqa: E731
    eval_tr, eval_te = nhwc(ds.x_train), nhwc(ds.x_test)  # for evaluation: normalised, not augmented
    monitor = eval_te[:1024]

    start_epoch, history, elapsed, baseline = 0, [], 0.0, None
    resuming = resume_from is not None
    if nproc > 1:  # only process 0 knows; the others receive the state and the epoch from it
        from jax.experimental import multihost_utils

        resuming = bool(multihost_utils.broadcast_one_to_all(np.int32(resuming)))
    if resuming:
        meta = trainer.load(resume_from)
        start_epoch = meta["epoch"] if meta is not None else 0
        if nproc > 1:
            start_epoch = int(multihost_utils.broadcast_one_to_all(np.int32(start_epoch)))
        if meta is not None:
            history, elapsed, baseline = meta["history"], meta["seconds"], meta["baseline"]
        log(out, f"resumed from {resume_from} after epoch {start_epoch}")
    t0 = time.perf_counter()
    if baseline is None and is_main:
        baseline = evaluate(trainer, ds, eval_tr, eval_te)
    parallel = (f"on {ndev} devices" if nproc == 1 else f"on {ndev} devices of {nproc} processes") if mesh else ""
    if is_main:
        common.log_start(out, args, ds, baseline, device_name() + (f", data-parallel {parallel}" if mesh else ""))

    for epoch in range(start_epoch, args.epochs):
        if args.stop_after is not None and epoch >= args.stop_after:
            log(out, f"stopping after epoch {epoch} (--stop-after)")
            return {}
        # Everything random in an epoch derives from (seed, epoch): the order, and image i's views from
        # (seed, epoch, i). A resume replays it; any number of devices and hosts draws the same.
        order = np.random.default_rng([args.seed, epoch]).permutation(n_train)
        sums = dict.fromkeys(TERM_KEYS, 0.0)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{args.epochs}",
            leave=False,
            disable=None if is_main else True,
        )
        t_epoch = time.perf_counter()
        for i in bar:
            terms = trainer.step(images, order[i * batch_size : (i + 1) * batch_size], epoch)
            values = local_values(terms)
            for k in TERM_KEYS:
                sums[k] += values[k]
            bar.set_postfix(loss=f"{values['loss']:.3f}", std=f"{values['std_mean']:.3f}")
        seconds = time.perf_counter() - t_epoch
        if not is_main:
            continue
        record = common.epoch_record(epoch + 1, sums, steps_per_epoch, batch_size, seconds)
        stats = common.embedding_stats(trainer.features(monitor, "embed"))
        record.update(
            eval_std_mean=stats["std_mean"],
            effective_rank=stats["effective_rank"],
            rank_me=stats["rank_me"],
            lr=float(trainer.schedule((epoch + 1) * steps_per_epoch - 1)),
            variance_target=args.variance_target,
        )
        history.append(record)
        common.log_epoch(out, record, args, parallel)
        meta = {
            "epoch": epoch + 1,
            "history": history,
            "seconds": elapsed + time.perf_counter() - t0,
            "baseline": baseline,
            "args": {k: v for k, v in vars(args).items() if k != "stop_after"},
        }
        trainer.save(common.checkpoint_path(out, CHECKPOINT_EXT), meta)

    if not is_main:
        return {}
    final = evaluate(trainer, ds, eval_tr, eval_te)
    return common.finish(
        out,
        args,
        ds,
        history,
        final,
        baseline,
        seconds=elapsed + time.perf_counter() - t0,
        device=device_name(),
        world_size=nproc,
        devices=ndev,
    )


def build_parser() -> argparse.ArgumentParser:
    """The example's command line: the common flags (:func:`backends.common.build_parser`)."""
    return cli.build_parser("jax", description=__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse and check the command line before JAX is imported (usage errors exit with status 2), then
    :func:`train`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env = launch.jax_multihost()
    except ValueError as e:
        parser.error(str(e))
    cli.check_args(parser, args, env.world_size)
    args.checkpoint_ext = CHECKPOINT_EXT
    try:
        if env.is_main:
            common.resolve_out(args)
        return train(args, env)
    except common.UsageError as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
