"""Tests of the training examples (backends/) and their shared pieces (backends/common/).

The examples run for one or two short epochs on a subset of digits; the probe, k-NN, monitoring,
schedule, data loaders and metrics schema have unit tests of their own.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from backends import common

# A few seconds per run: 8x8 digits, 96 train / 96 held-out images, batches of 32 (3 steps an epoch).
FAST = [
    "--subset",
    "96",
    "--batch-size",
    "32",
    "--image-size",
    "8",
    "--proj-dims",
    "64-64-64",
    "--warmup-epochs",
    "0.5",
]


# ---------------------------------------------------------------- probe and k-NN on toy data


def blobs(n_per_class: int, centres: np.ndarray, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + scale * rng.standard_normal((n_per_class, centres.shape[1])) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return x, y


def test_linear_probe_separates_linearly_separable_classes():
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.standard_normal((4, 10))
    xtr, ytr = blobs(50, centres, 0.5, 1)
    xte, yte = blobs(50, centres, 0.5, 2)
    assert common.linear_probe(xtr, ytr, xte, yte) == 1.0


def test_linear_probe_is_at_chance_on_random_labels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 20))
    y = rng.integers(0, 4, 600)
    acc = common.linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert 0.1 < acc < 0.4  # chance is 0.25


def test_linear_probe_needs_the_scaler_only_not_the_scale():
    # Standardisation makes the probe blind to a per-feature rescaling of the features.
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 6))
    xtr, ytr = blobs(40, centres, 0.8, 4)
    xte, yte = blobs(40, centres, 0.8, 5)
    scale = np.array([1e-3, 1e3, 1.0, 10.0, 0.1, 1.0])
    a = common.linear_probe(xtr, ytr, xte, yte)
    b = common.linear_probe(xtr * scale, ytr, xte * scale, yte)
    assert a == pytest.approx(b, abs=1.5 / len(yte))


def test_knn_uses_cosine_distance():
    # Class 0 lies along (1, 0) far from the origin, class 1 along (0, 1) close to it. Queries along
    # (1, 0) near the origin: Euclidean neighbours are all class 1, cosine neighbours class 0.
    r = np.linspace(1.0, 2.0, 25)[:, None]
    xtr = np.concatenate([10.0 * r * [1.0, 0.0], 0.1 * r * [0.0, 1.0]])
    ytr = np.repeat([0, 1], 25)
    xte = np.array([[0.1, 0.01], [0.2, -0.01], [0.15, 0.0], [0.01, 5.0]])
    yte = np.array([0, 0, 0, 1])
    assert common.knn_accuracy(xtr, ytr, xte, yte, k=20) == 1.0
    from sklearn.neighbors import KNeighborsClassifier

    assert KNeighborsClassifier(20).fit(xtr, ytr).score(xte, yte) == 0.25  # Euclidean gets them wrong


def test_knn_is_a_majority_vote_of_k_neighbours():
    # Under cosine distance the query's 2 nearest neighbours are class 0, the 3 others class 1.
    xtr = np.array([[1.0, 1.0], [1.0, 1.1], [1.0, 1.2], [1.0, -5.0], [1.0, -6.0]])
    ytr = np.array([1, 1, 1, 0, 0])
    xte = np.array([[1.0, -5.5]])
    assert common.knn_accuracy(xtr, ytr, xte, np.array([0]), k=2) == 1.0
    assert common.knn_accuracy(xtr, ytr, xte, np.array([1]), k=5) == 1.0  # 3 votes to 2
    assert common.knn_accuracy(xtr, ytr, xte, np.array([1]), k=50) == 1.0  # k capped at 5


def test_probe_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        common.linear_probe(np.zeros(5), np.zeros(5), np.zeros((5, 1)), np.zeros(5))
    with pytest.raises(ValueError, match="one label per row"):
        common.knn_accuracy(np.zeros((5, 2)), np.zeros(4), np.zeros((5, 2)), np.zeros(5))


# ---------------------------------------------------------------- monitoring and schedule


def test_effective_rank_matches_the_entropy_of_known_singular_values():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((200, 3)))
    u -= u.mean(axis=0)  # centred columns, re-orthonormalised below
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.standard_normal((16, 3)))
    s = np.array([3.0, 1.0, 1.0])
    z = (u * s) @ v.T + 7.0  # a constant shift does not count
    p = s / s.sum()
    assert common.effective_rank(z) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert common.effective_rank(np.outer(rng.standard_normal(50), np.ones(8))) == pytest.approx(1.0)
    assert common.effective_rank(np.ones((50, 8))) == 0.0


def test_embedding_stats_and_collapse_flag():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 8)) * np.arange(1, 9)
    stats = common.embedding_stats(z)
    assert stats["std_mean"] == pytest.approx(4.5, rel=0.03)
    assert stats["std_min"] == pytest.approx(1.0, rel=0.05)
    assert 6.5 < stats["effective_rank"] < 8
    assert common.is_collapsed(0.049) and not common.is_collapsed(0.051)
    assert common.is_collapsed(0.49, variance_target=10.0)
    assert common.is_collapsed(float("nan"))
    assert "COLLAPSE" in common.collapse_warning(0.01)
    assert "towards collapse" in common.collapse_warning(0.1)
    assert common.collapse_warning(0.9) is None


def test_warmup_cosine():
    f = common.warmup_cosine
    assert [f(t, 100, 4) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4, 100, 4) == 1.0
    assert f(52, 100, 4) == pytest.approx(0.5)
    assert f(100, 100, 4) == pytest.approx(0.0, abs=1e-12)
    assert f(100, 100, 4, final_fraction=0.001) == pytest.approx(0.001)
    assert f(0, 10, 0) == 1.0


# ---------------------------------------------------------------- data


def test_digits_split_is_stratified_fixed_and_upsampled():
    a = common.load_dataset()
    b = common.load_dataset(image_size=12)
    assert a.x_train.shape == (1257, 1, 16, 16) and a.x_test.shape == (540, 1, 16, 16)
    assert b.x_train.shape[-2:] == (12, 12)
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.y_test, b.y_test)  # the split does not depend on the size
    frac = np.bincount(a.y_test) / np.bincount(np.concatenate([a.y_train, a.y_test]))
    assert np.all(np.abs(frac - 0.3) < 0.02)
    # Upsampling keeps each image's mean brightness (bilinear, edges clamped) to within a few percent.
    from sklearn.datasets import load_digits

    raw = load_digits().images / 16.0
    assert abs(a.x_train.mean() - raw.mean()) < 0.02
    sub = a.subset(100)
    assert len(sub.y_train) == 100 and len(sub.y_test) == 100 and len(np.unique(sub.y_train)) == 10


def test_resize_matches_torch_bilinear():
    import torch

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 8, 8)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(20, 20), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(common.data.resize(x, 20), np.clip(ref, 0, 1), atol=1e-5)


def write_images(root, classes, n, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(root, c, f"{i}.png"))


def test_image_folder_layouts(tmp_path):
    write_images(tmp_path / "flat", ["cat", "dog"], 10)
    ds = common.load_dataset(str(tmp_path / "flat"), image_size=8)
    assert ds.classes == ["cat", "dog"] and ds.x_train.shape == (14, 3, 8, 8) and len(ds.y_test) == 6
    write_images(tmp_path / "split" / "train", ["a", "b", "c"], 4)
    write_images(tmp_path / "split" / "val", ["a", "b", "c"], 2)
    ds = common.load_dataset(str(tmp_path / "split"), image_size=8)
    assert len(ds.y_train) == 12 and len(ds.y_test) == 6 and ds.num_classes == 3


def test_cifar10_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    ds = common.load_dataset(str(tmp_path))
    assert ds.name == "cifar10" and ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(common.DataError, match="data_batch_3"):
        common.load_dataset(str(tmp_path))


def test_bad_data_paths_give_clear_errors(tmp_path, capsys):
    with pytest.raises(common.DataError, match="does not exist"):
        common.load_dataset(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(common.DataError, match="is a file"):
        common.load_dataset(str(tmp_path / "file.txt"))
    os.makedirs(tmp_path / "empty" / "only-one-class")
    with pytest.raises(common.DataError, match="one subfolder per class"):
        common.load_dataset(str(tmp_path / "empty"))
    os.makedirs(tmp_path / "noimg" / "a")
    os.makedirs(tmp_path / "noimg" / "b")
    with pytest.raises(common.DataError, match="no image files"):
        common.load_dataset(str(tmp_path / "noimg"))
    from backends.torch import train

    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # a run that fails before its first epoch leaves no folder


def test_default_optimizer_without_timm_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """LARS, the default, comes from timm: without it the run stops before training with exit status 2 and
    a message naming both ways out, and leaves no output folder."""
    from backends.torch import train

    monkeypatch.setitem(sys.modules, "timm.optim", None)  # import timm.optim now raises ImportError
    with pytest.raises(SystemExit) as e:
        train.main(["--subset", "64", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs timm" in err and "--optimizer adamw" in err
    assert not (tmp_path / "o").exists()


def test_cli_flags():
    p = common.build_parser("torch")
    a = p.parse_args(["--proj-dims", "8192-8192-8192", "--optimizer", "lars", "--batch-size", "512"])
    assert a.proj_dims == [8192, 8192, 8192]
    common.resolve_optimizer_defaults(a)
    assert a.lr == pytest.approx(6.4) and a.weight_decay == 1e-6  # 3.2 x 512 / 256
    d = common.resolve_optimizer_defaults(p.parse_args([]))
    assert (d.optimizer, d.lr, d.weight_decay) == ("lars", pytest.approx(3.2), 1e-6)
    w = common.resolve_optimizer_defaults(p.parse_args(["--optimizer", "adamw", "--batch-size", "64"]))
    assert (w.lr, w.weight_decay) == (4e-3, 1e-4)  # AdamW's lr does not scale with the batch
    for bad in (["--proj-dims", "8-x"], ["--epochs", "0"], ["--lr", "-1"], ["--optimizer", "sgd"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_metrics_schema_rejects_missing_and_wrong_keys(tmp_path):
    good = {
        "backend": "x",
        "dataset": "d",
        "linear_probe_accuracy": 0.9,
        "knn_accuracy": 0.8,
        "random_init_linear_probe_accuracy": 0.5,
        "embedding_std_mean": 0.7,
        "effective_rank": 3.0,
        "collapsed": False,
        "epochs": 1,
        "seconds": 1.0,
        "images_per_second": 9.0,
        "device": "cpu",
        "world_size": 1,
        "devices": 1,
        "history": [
            {
                "epoch": 1,
                "loss": 1.0,
                "invariance": 0.1,
                "variance": 0.2,
                "covariance": 0.3,
                "std_mean": 0.7,
                "effective_rank": 3.0,
            }
        ],
    }
    common.write_metrics(str(tmp_path), good)
    assert common.read_metrics(str(tmp_path)) == good
    for key, value in [("collapsed", None), ("epochs", 1.5), ("knn_accuracy", 1.5), ("world_size", 2.0)]:
        with pytest.raises(ValueError, match=key):
            common.validate({**good, key: value})
    with pytest.raises(ValueError, match="missing key 'history'"):
        common.validate({k: v for k, v in good.items() if k != "history"})
    with pytest.raises(ValueError, match="history"):
        common.validate({**good, "history": [{"epoch": 1}]})


# ---------------------------------------------------------------- the examples, end to end


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The examples set torch's thread count (and seed); give the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def record_steps(make_loss, sink):
    """Wrap an example's loss step to record each step's loss."""

    def factory(config):
        step = make_loss(config)

        def recorded(z1, z2, scale=None):
            terms = step(z1, z2, scale)
            sink.append(terms["loss"])
            return terms

        return recorded

    return factory


def check_run(out, backend, epochs):
    metrics = json.loads((out / "metrics.json").read_text())
    common.validate(metrics)
    assert metrics["backend"] == backend and metrics["dataset"] == "digits"
    assert metrics["epochs"] == epochs and len(metrics["history"]) == epochs
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "checkpoint.pt").is_file()
    # throughput: training images over training seconds, the same whether read whole or per epoch
    assert metrics["world_size"] == 1 and metrics["devices"] == 1 and metrics["images_per_second"] > 0
    history = metrics["history"]
    assert all(r["images"] == 96 and r["images_per_second"] > 0 for r in history)
    expected = sum(r["images"] for r in history) / sum(r["seconds"] for r in history)
    assert metrics["images_per_second"] == pytest.approx(expected, rel=1e-12)
    assert f"{history[0]['images_per_second']:.0f} img/s" in (out / "log.txt").read_text()
    return metrics


@pytest.mark.slow
def test_torch_and_numpy_examples_agree_step_by_step(tmp_path):
    """Same flags and seed: the NumPy example (analytic gradient through DLPack) and the PyTorch example
    (autograd) see the same batches and weights, so their losses agree to float32 precision."""
    from backends.numpy.train import NumpyLoss
    from backends.torch import train

    losses = {}
    for backend, make_loss in (("torch", train.TorchLoss), ("numpy", NumpyLoss)):
        losses[backend] = []
        args = common.build_parser(backend).parse_args([*FAST, "--epochs", "1", "--out", str(tmp_path / backend)])
        train.train(args, record_steps(make_loss, losses[backend]))
        check_run(tmp_path / backend, backend, 1)
    assert len(losses["torch"]) == 3
    # Measured: identical at step 1, ~1e-7 relative at step 3 (float32 eps: 1.2e-7).
    np.testing.assert_allclose(losses["numpy"], losses["torch"], rtol=5e-6)
    # Different steps differ far more than the two backends do: the comparison has teeth.
    assert abs(losses["torch"][2] - losses["torch"][0]) > 1e-3


@pytest.mark.slow
def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    from backends.torch import train

    flags = [*FAST, "--epochs", "2"]
    full = train.main([*flags, "--out", str(tmp_path / "full")])
    assert train.main([*flags, "--out", str(tmp_path / "cut"), "--stop-after", "1"]) == {}
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train.main([*flags, "--out", str(tmp_path / "cut"), "--resume"])
    check_run(tmp_path / "cut", "torch", 2)
    assert "resumed from" in (tmp_path / "cut" / "log.txt").read_text()
    for key in (
        "linear_probe_accuracy",
        "knn_accuracy",
        "random_init_linear_probe_accuracy",
        "embedding_std_mean",
        "effective_rank",
    ):
        assert resumed[key] == full[key], key
    for a, b in zip(resumed["history"], full["history"]):
        for key in ("loss", "invariance", "variance", "covariance", "std_mean"):
            assert a[key] == b[key], key


def test_resume_with_other_flags_or_another_network_is_a_usage_error(tmp_path, capsys):
    """A checkpoint written with another optimizer or network is refused with exit status 2 and a message
    naming the difference, before any state is loaded; so is one whose network differs in a way the flags
    do not show (an earlier version's expander, with biases)."""
    import torch

    from backends.torch import train

    flags = [*FAST, "--epochs", "2", "--out", str(tmp_path / "run")]
    assert train.main([*flags, "--stop-after", "1"]) == {}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main([*flags, "--resume", "--optimizer", "adamw"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--optimizer 'lars' there, 'adamw' here" in err and "Traceback" not in err
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["projector.0.bias"] = torch.zeros(ckpt["model"]["projector.1.weight"].shape)
    torch.save(ckpt, path)
    with pytest.raises(SystemExit) as e:
        train.main([*flags, "--resume"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds a different network or optimizer" in err and "projector.0.bias" in err


def test_resume_without_checkpoint_is_a_usage_error(tmp_path, capsys):
    from backends.torch import train

    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path)])
    assert "no checkpoint" in capsys.readouterr().err


def test_lars_adapts_weights_but_not_biases_or_norms():
    """One LARS step by hand: weights get ``lr * eta * ||w|| / (||g|| + wd ||w||) * (g + wd w)``, biases
    and norm parameters plain ``lr * g`` (official: excluded from weight decay and adaptation)."""
    pytest.importorskip("timm")
    import argparse

    import torch

    from backends.torch.train import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    args = argparse.Namespace(optimizer="lars", lr=0.5, weight_decay=0.1)
    opt = build_optimizer(model, args)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(8, 4)).square().sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        w, g = before[name].double(), grads[name].double()
        if p.ndim > 1:
            trust = 0.001 * w.norm() / (g.norm() + 0.1 * w.norm())
            expected = w - 0.5 * trust * (g + 0.1 * w)
        else:
            expected = w - 0.5 * g
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_numpy_example_on_an_image_folder_with_resnet18(tmp_path):
    """Smoke test. ``--data`` with an ImageFolder: RGB images, the natural-image augmentations, torchvision's
    resnet18 with the small-image stem; the NumPy example's command line end to end."""
    from backends.numpy.train import main

    write_images(tmp_path / "imgs", ["a", "b"], 12)
    metrics = main(
        [
            "--data",
            str(tmp_path / "imgs"),
            "--image-size",
            "16",
            "--arch",
            "resnet18",
            "--proj-dims",
            "32-32",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert metrics["backend"] == "numpy" and metrics["dataset"] == "imgs"
    assert len(metrics["history"]) == 1 and np.isfinite(metrics["history"][0]["loss"])
    common.validate(json.loads((tmp_path / "out" / "metrics.json").read_text()))
