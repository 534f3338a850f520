"""Real-world noisy sets (Clothing1M, mini-WebVision): file lists, file-backed training,
pretrained backbones, ensembles, and runs without a noise mask.

Tiny trees in the real list formats (JPEGs written with PIL): Clothing1M 14 classes x 3
noisy training images + 14 clean validation and 14 clean test images; WebVision 52 classes
(two beyond mini-WebVision's 50, which must be dropped) x 1 training image + 1 validation
image, and ILSVRC12 validation folders for the first 50 synsets. Networks see 72 px crops of
80 px decodes: above 64 px, so the ResNets keep their ImageNet stem, and cheap on a CPU.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import lci
from lci.augment import Augmenter
from lci.config import TrainConfig
from lci.data import balanced_subset, clear_cache, load_data
from lci.data.imagefiles import ImageFiles, decode_image
from lci.errors import ConfigError, DataError

SIZES = ["--set", "image_size=72", "--set", "resize_size=80"]
MASK_METRICS = ("train_acc_clean", "train_acc_noisy", "train_acc_noisy_true", "conf_auroc",
                "conf_mean_clean", "conf_mean_noisy", "realized_noise_rate")
N_CLOTHING = 14


# ------------------------------------------------------------------------------- trees
def _jpeg(path, color, rng, size=(96, 80)):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = rng.integers(-30, 30, (size[1], size[0], 3))
    a = np.clip(np.asarray(color)[None, None, :] + noise, 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path, quality=90)


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def make_clothing1m(data_dir, per_class=3):
    """``<data_dir>/clothing1m`` with the five list files of the real set."""
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 255, (N_CLOTHING, 3))
    root = os.path.join(data_dir, "clothing1m")
    noisy, clean, train, val, test = [], [], [], [], []
    for k in range(N_CLOTHING):
        for j in range(per_class):
            p = f"images/{k % 3}/{k:02d}/tr{k}_{j}.jpg"
            _jpeg(os.path.join(root, p), colors[k], rng)
            noisy.append(f"{p} {(k + (j == 0)) % N_CLOTHING}")  # a third of the labels wrong
            train.append(p)
        for lst, tag in ((val, "va"), (test, "te")):
            p = f"images/{k % 3}/{k:02d}/{tag}{k}.jpg"
            _jpeg(os.path.join(root, p), colors[k], rng)
            clean.append(f"{p} {k}")
            lst.append(p)
    for name, lines in (("noisy_label_kv", noisy), ("clean_label_kv", clean),
                        ("noisy_train_key_list", train), ("clean_val_key_list", val),
                        ("clean_test_key_list", test)):
        _write(os.path.join(root, name + ".txt"), lines)


def make_webvision(data_dir, classes=52, imagenet=True):
    """``<data_dir>/webvision`` (info/ lists, google/ images, val_images_256/) and, with
    ``imagenet``, ``<data_dir>/imagenet/val/<synset>/`` for the first 50 classes."""
    rng = np.random.default_rng(1)
    colors = rng.integers(0, 255, (classes, 3))
    root = os.path.join(data_dir, "webvision")
    train, val, synsets = [], [], []
    for k in range(classes):
        synsets.append(f"n{k:08d} class{k}, something")
        p = f"google/q{k:04d}/00000000.jpg"
        _jpeg(os.path.join(root, p), colors[k], rng)
        train.append(f"{p} {k}")
        p = f"val{k:06d}.jpg"
        _jpeg(os.path.join(root, "val_images_256", p), colors[k], rng)
        val.append(f"{p} {k}")
        if imagenet and k < 50:
            _jpeg(os.path.join(data_dir, "imagenet", "val", f"n{k:08d}",
                               f"ILSVRC2012_val_{k:08d}.JPEG"), colors[k], rng)
    _write(os.path.join(root, "info", "train_filelist_google.txt"), train)
    _write(os.path.join(root, "info", "val_filelist.txt"), val)
    _write(os.path.join(root, "info", "synsets.txt"), synsets)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("realworld_data")
    make_clothing1m(str(d))
    make_webvision(str(d))
    return str(d)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 state dict saved to a file, as a pretrained checkpoint."""
    import torchvision

    path = tmp_path_factory.mktemp("pretrained") / "resnet18.pth"
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture
def one_thread():
    """``threads=1`` runs set torch's thread count for the process: put it back afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def lci_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "lci_study", *args], capture_output=True,
                          text=True, env=env)


# --------------------------------------------------------------------------------- lists
def test_clothing1m_bundle(data_dir):
    b = load_data("clothing1m", data_dir, image_size=72, resize_size=80)
    assert b.file_backed and isinstance(b.x_train, ImageFiles)
    assert b.x_train.shape == (42, 3, 80, 80) and b.image_shape == (3, 80, 80)
    assert b.num_classes == 14 and b.class_names[0] == "T-Shirt" and len(b.class_names) == 14
    assert b.labels_are_noisy and b.y_train_true is None
    # training labels are the noisy ones, in the order of noisy_train_key_list.txt
    assert b.y_train[:3].tolist() == [1, 0, 0]
    assert len(b.y_test) == 14 and b.y_test.tolist() == list(range(14))   # clean labels
    x_val, y_val = b.extra_tests["clean_val"]
    assert len(x_val) == 14 and y_val.tolist() == list(range(14))
    assert b.crop == 72 and b.color_jitter is None
    assert b.mean == (0.6959, 0.6537, 0.6371) and b.std == (0.3113, 0.3192, 0.3214)
    img, i = b.x_train[5]
    assert i == 5 and img.dtype == torch.uint8 and img.shape == (3, 80, 80)


def test_webvision_bundle_keeps_50_classes_and_imagenet(data_dir):
    b = load_data("webvision", data_dir, image_size=72, resize_size=80)
    assert b.num_classes == 50
    assert len(b.x_train) == 50 and int(b.y_train.max()) == 49   # classes 50, 51 dropped
    assert len(b.x_test) == 50
    assert b.x_test.path(0).endswith(os.path.join("webvision", "val_images_256", "val000000.jpg"))
    x_in, y_in = b.extra_tests["imagenet_test"]
    assert len(x_in) == 50 and y_in.tolist() == list(range(50))
    assert b.class_names[:2] == ["class0", "class1"]               # from info/synsets.txt
    assert b.color_jitter == (0.4, 0.4, 0.4, 0.2)
    assert b.mean == (0.485, 0.456, 0.406)


def test_webvision_without_imagenet(tmp_path):
    make_webvision(str(tmp_path), classes=50, imagenet=False)
    b = load_data("webvision", str(tmp_path))
    assert b.extra_tests == {}


def test_decode_matches_torchvision_resize_centercrop(tmp_path):
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    ref = transforms.Compose([transforms.Resize(80), transforms.CenterCrop(80)])
    small = str(tmp_path / "small.jpg")
    _jpeg(small, (120, 60, 200), rng, size=(96, 80))
    want = np.asarray(ref(Image.open(small).convert("RGB"))).transpose(2, 0, 1)
    assert np.array_equal(decode_image(small, 80).numpy(), want)
    # a large JPEG is decoded at a reduced DCT scale first: close, not bit-equal
    big = str(tmp_path / "big.jpg")
    _jpeg(big, (120, 60, 200), rng, size=(400, 330))
    want = np.asarray(ref(Image.open(big).convert("RGB"))).transpose(2, 0, 1).astype(float)
    got = decode_image(big, 80).numpy().astype(float)
    assert got.shape == (3, 80, 80) and np.abs(got - want).mean() < 4.0


@pytest.mark.parametrize("which", ["clothing1m", "webvision"])
def test_missing_image_names_list_line_and_path(tmp_path, which):
    make_clothing1m(str(tmp_path)) if which == "clothing1m" else make_webvision(str(tmp_path))
    if which == "clothing1m":
        os.remove(tmp_path / "clothing1m" / "images" / "1" / "04" / "tr4_1.jpg")
        where, line, path = "noisy_train_key_list.txt", 14, "images/1/04/tr4_1.jpg"
    else:
        os.remove(tmp_path / "webvision" / "val_images_256" / "val000003.jpg")
        where, line, path = "val_filelist.txt", 4, "val000003.jpg"
    with pytest.raises(DataError) as e:
        load_data(which, str(tmp_path))
    msg = str(e.value)
    assert where in msg and f"line {line}" in msg and path in msg and "does not exist" in msg


def test_missing_image_exits_2_from_cli(tmp_path):
    make_clothing1m(str(tmp_path))
    os.remove(tmp_path / "clothing1m" / "images" / "0" / "03" / "te3.jpg")
    p = lci_cli("train", "--quiet", "--out", str(tmp_path / "run"), "--set", "dataset=clothing1m",
                "--set", f"data_dir={tmp_path}", "--set", "device=cpu")
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert "clean_test_key_list.txt, line 4" in err and "images/0/03/te3.jpg" in err
    assert not (tmp_path / "run").exists()        # checked before anything was written


def test_missing_or_bad_list_files(tmp_path):
    with pytest.raises(DataError, match="clothing1m.*does not exist"):
        load_data("clothing1m", str(tmp_path))
    make_clothing1m(str(tmp_path))
    os.remove(tmp_path / "clothing1m" / "clean_val_key_list.txt")
    with pytest.raises(DataError, match="clean_val_key_list.txt.*does not exist"):
        load_data("clothing1m", str(tmp_path))
    shutil.rmtree(tmp_path / "clothing1m")
    make_clothing1m(str(tmp_path))
    kv = tmp_path / "clothing1m" / "noisy_label_kv.txt"
    kv.write_text(kv.read_text().replace(" 1\n", " 14\n", 1))
    with pytest.raises(DataError, match=r"noisy_label_kv.txt, line \d+ has label 14; labels "
                                        r"must be in \[0, 14\)"):
        load_data("clothing1m", str(tmp_path))
    clear_cache()


def test_balanced_subset():
    labels = np.repeat(np.arange(4), [10, 10, 10, 3])
    idx = balanced_subset(labels, 14, 4, seed=0)
    counts = np.bincount(labels[idx], minlength=4)
    assert sorted(counts.tolist()) == [3, 3, 4, 4]        # 14 = 4 x 3 + 2 at random
    assert np.array_equal(idx, np.sort(idx)) and len(set(idx.tolist())) == 14
    assert np.array_equal(idx, balanced_subset(labels, 14, 4, seed=0))
    assert not np.array_equal(idx, balanced_subset(labels, 14, 4, seed=1))
    small = np.bincount(labels[balanced_subset(labels, 20, 4, seed=0)], minlength=4)
    assert small.tolist() == [5, 5, 5, 3]                  # class 3 gives all it has
    assert len(balanced_subset(labels, 0, 4, seed=0)) == len(labels)


# -------------------------------------------------------------------------------- config
def test_config_for_realworld_sets():
    c = TrainConfig(dataset="clothing1m").resolved()
    assert (c.noise, c.train_subset, c.image_size, c.resize_size) == ("none", 128000, 224, 256)
    assert (c.model, c.lr, c.weight_decay, c.batch_size) == ("resnet50", 0.002, 1e-3, 64)
    c = TrainConfig(dataset="webvision", image_size="32").resolved()
    assert (c.train_subset, c.image_size, c.resize_size) == (0, 32, 37)
    c = TrainConfig(dataset="digits", train_subset="100").resolved()
    assert (c.train_subset, c.image_size, c.resize_size) == (100, 0, 0)
    with pytest.raises(ConfigError, match="image_size=32 applies only to"):
        TrainConfig(dataset="digits", image_size=32)
    with pytest.raises(ConfigError, match="resize_size=64 must be >= image_size=72"):
        TrainConfig(dataset="webvision", image_size=72, resize_size=64)
    with pytest.raises(ConfigError, match="train_subset"):
        TrainConfig(train_subset=-1)


# ---------------------------------------------------------------------------- augmenter
def _batch(B=4, H=20, W=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8, generator=g)


def test_augmenter_crop_and_center():
    x = _batch()
    a = Augmenter((0.0,) * 3, (1 / 255,) * 3, pad=0, hflip=False, mode="weak", crop=12,
                  generator=torch.Generator().manual_seed(0))
    v = a(x)
    assert v.shape == (4, 3, 12, 12)
    for b in range(4):  # every view is a window of its own image (normalisation = x·1)
        windows = x[b].float().unfold(1, 12, 1).unfold(2, 12, 1)        # [3, 9, 9, 12, 12]
        hit = (windows == v[b][:, None, None]).all(-1).all(-1).all(0)
        assert hit.any()
    c = a.normalize(x)  # evaluation: the centre window (torchvision's CenterCrop)
    assert torch.equal(c, x[:, :, 4:16, 4:16].float())
    assert a.normalize(x[:, :, 4:16, 4:16]).shape == (4, 3, 12, 12)     # already cropped


def test_augmenter_jitter():
    x = _batch(B=64, H=8, W=8)
    mean, std = (0.0,) * 3, (1 / 255,) * 3

    def aug(jitter, seed=0):
        return Augmenter(mean, std, pad=0, hflip=False, mode="weak", jitter=jitter,
                         generator=torch.Generator().manual_seed(seed))

    assert torch.equal(aug((0, 0, 0, 0))(x), x.float())                # all off: identity
    # brightness alone: each image scaled by one factor in [0.6, 1.4] (then clamped)
    dim = x.clamp(10, 150)                                             # never clamped
    v = aug((0.4, 0, 0, 0))(dim)
    ratio = v / dim.float()
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert per_image.min() >= 0.6 - 1e-5 and per_image.max() <= 1.4 + 1e-5
    assert per_image[:, 0].std() > 0.1                                 # per-sample factors
    # hue alone turns the chroma plane: grey pixels stay grey, luma is kept
    grey = torch.full((8, 3, 4, 4), 100, dtype=torch.uint8)
    assert torch.allclose(aug((0, 0, 0, 0.2))(grey), grey.float(), atol=1e-3)
    col = _batch(B=8, H=4, W=4).clamp(100, 150)     # low saturation: stays in gamut
    h = aug((0, 0, 0, 0.2))(col)
    luma = lambda t: 0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]  # noqa: E731
    assert torch.allclose(luma(h), luma(col.float()), atol=1e-2) and not torch.allclose(h, col.float())
    # seeded: the same generator state, the same views
    full = (0.4, 0.4, 0.4, 0.2)
    assert torch.equal(aug(full)(x), aug(full)(x))
    assert not torch.equal(aug(full)(x), aug(full, seed=1)(x))
    assert aug(full)(x).min() >= 0 and aug(full)(x).max() <= 255


def test_augmenter_crop_keeps_in_memory_draws():
    """crop=0 draws exactly what it drew before the option existed (pad crop + flip)."""
    x = _batch()
    a = Augmenter((0.5,) * 3, (0.25,) * 3, pad=2, hflip=True, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    rows = torch.arange(20).expand(4, 20) + torch.randint(0, 5, (4, 1), generator=g)
    cols = torch.arange(20).expand(4, 20) + torch.randint(0, 5, (4, 1), generator=g)
    flip = torch.randint(0, 2, (4, 1), generator=g).bool()
    cols = torch.where(flip, cols.flip(1), cols)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    want = torch.stack([xp[b][:, rows[b]][:, :, cols[b]] for b in range(4)])
    assert torch.allclose(a(x), (want.float() / 255 - 0.5) / 0.25, atol=1e-5)


# -------------------------------------------------------------------------- pretrained
def test_pretrained_torchvision_checkpoint_through_config(data_dir, resnet18_file):
    from lci.trainer import Trainer

    cfg = TrainConfig(dataset="clothing1m", data_dir=data_dir, model="resnet18", method="lci",
                      pretrained=resnet18_file, image_size=72, resize_size=80, device="cpu",
                      train_subset=28, epochs=1, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # every backbone tensor must find its match
        tr = Trainer(cfg)
    sd = torch.load(resnet18_file)
    for model in (tr.engine.theta, tr.engine.theta_star):
        assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)  # 224px stem
        got = model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith("fc."))
        assert model.fc.out_features == 14                    # a fresh head for 14 classes
    assert tr.n_train == 28 and len(tr.x_train) == 28


# ------------------------------------------------------------------------ training runs
def test_clothing1m_cli_run_without_noise_mask(data_dir, resnet18_file, tmp_path):
    out = tmp_path / "run"
    p = lci_cli("train", "--quiet", "--out", str(out), "--set", "dataset=clothing1m",
                "--set", f"data_dir={data_dir}", "--set", "model=resnet18",
                "--set", f"pretrained={resnet18_file}", "--set", "batch_size=8",
                "--set", "train_subset=28", "--set", "epochs=1", "--set", "device=cpu",
                "--set", "num_workers=1", "--set", "threads=1", *SIZES)
    assert p.returncode == 0, p.stderr
    assert "noise=none" in p.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["noise"] == "none" and cfg["train_subset"] == 28 and cfg["pretrained"] == resnet18_file
    res = json.loads((out / "result.json").read_text())
    for k in ("test_acc", "test_acc_top5", "robust_test_acc", "clean_val_acc", "dce_fraction"):
        assert 0.0 <= res[k] <= 1.0, k
    for k in MASK_METRICS:                               # nobody knows which labels are wrong
        assert k not in res
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert not set(MASK_METRICS) & set(header)
    import pandas as pd

    li = pd.read_csv(out / "label_issues.csv")
    assert list(li.columns) == ["index", "given_label", "predicted_label", "label_confidence",
                                "is_label_issue", "path"]
    assert len(li) == 28 and li["label_confidence"].is_monotonic_increasing
    # 2 per class of the 3 listed: the balanced subset, indexed into the noisy training list
    assert np.bincount(li["given_label"], minlength=14).tolist() == [2] * 14
    with open(os.path.join(data_dir, "clothing1m", "noisy_train_key_list.txt")) as fh:
        lines = fh.read().split()
    assert all(lines[i] == pth for i, pth in zip(li["index"], li["path"]))


def test_file_backed_resume_is_exact(data_dir, tmp_path, one_thread):
    """Batches come from the run's generator, so an interrupted run resumes exactly."""
    cfg = dict(dataset="clothing1m", data_dir=data_dir, model="resnet18", method="gce",
               batch_size=8, train_subset=28, epochs=2, image_size=72, resize_size=80,
               device="cpu", threads=1)
    full = lci.fit(cfg, str(tmp_path / "full"))

    class Stop(Exception):
        pass

    def stop(trainer, metrics):
        raise Stop

    with pytest.raises(Stop):
        lci.fit(cfg, str(tmp_path / "resumed"), on_epoch=stop)
    resumed = lci.fit(cfg, str(tmp_path / "resumed"), resume=True)
    for k in ("loss", "test_acc", "clean_val_acc", "dce_fraction"):
        assert full[k] == resumed[k], k


def test_webvision_runs_and_ensemble(data_dir, tmp_path, one_thread):
    runs = []
    for seed in (0, 1):  # two independently trained networks (in-process: no start-up cost)
        out = str(tmp_path / f"run{seed}")
        lci.fit(dict(dataset="webvision", data_dir=data_dir, model="resnet18", method="lci",
                     batch_size=16, epochs=1, seed=seed, device="cpu", eval_train=False,
                     image_size=72, resize_size=80, threads=1), out)
        runs.append(out)
    res = json.loads(open(os.path.join(runs[0], "result.json")).read())
    for k in ("test_acc", "test_acc_top5", "imagenet_test_acc", "imagenet_test_acc_top5"):
        assert 0.0 <= res[k] <= 1.0
    assert not set(MASK_METRICS) & set(res)

    p = lci_cli("ensemble", *runs, "--json")
    assert p.returncode == 0, p.stderr
    ens = json.loads(p.stdout.strip().splitlines()[-1])
    # the averaged softmax, recomputed from the two restored runs
    from lci.ensemble import load_run

    trainers = [load_run(r) for r in runs]
    for name in ("test", "imagenet_test"):
        x, y = trainers[0].eval_sets()[name]
        probs = [t.probabilities(t.eval_sets()[name][0]) for t in trainers]
        mean = (probs[0] + probs[1]) / 2
        assert ens[f"{name}_acc"] == pytest.approx(mean.argmax(1).eq(y).float().mean().item())
        top5 = mean.topk(5, 1).indices.eq(y[:, None]).any(1).float().mean().item()
        assert ens[f"{name}_acc_top5"] == pytest.approx(top5)
    assert [m["test_acc"] for m in ens["members"]] == [
        json.loads(open(os.path.join(r, "result.json")).read())["test_acc"] for r in runs]


@pytest.mark.slow
def test_webvision_study_and_ensemble_of_trials(data_dir, tmp_path):
    """`lci sweep` on a file-backed set; `lci ensemble` on two evaluation trials' folders."""
    import glob

    import yaml

    spec = {"name": "rw_tiny", "storage": str(tmp_path / "results"),
            "fixed": {"dataset": "webvision", "data_dir": data_dir, "model": "resnet18",
                      "batch_size": 16, "epochs": 1, "image_size": 72, "resize_size": 80,
                      "device": "cpu", "threads": 1, "checkpoint_every": 1},
            "noise": ["none"], "methods": ["gce"], "evaluation": {"seeds": 2},
            "resources": {"cpu": 1, "gpu": 0}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    p = subprocess.run([sys.executable, "-m", "lci_study", "sweep", str(path)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    trials = sorted(glob.glob(str(tmp_path / "results" / "rw_tiny" / "trials" / "gce_none__eval-*" /
                                  "checkpoint_*")))
    assert len(trials) == 2
    for t in trials:
        res = json.loads(open(os.path.join(t, "result.json")).read())
        assert "imagenet_test_acc" in res and not set(MASK_METRICS) & set(res)
    p = lci_cli("ensemble", *trials, "--json")
    assert p.returncode == 0, p.stderr
    ens = json.loads(p.stdout.strip().splitlines()[-1])
    assert ens["n_members"] == 2 and 0.0 <= ens["imagenet_test_acc"] <= 1.0
