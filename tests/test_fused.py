"""Fused seeds (lci.fused, lci.hfta): each member trains exactly as its seed alone.

"Exactly" is to float rounding: the weight gradient of a grouped convolution may add its terms
in another order than k separate convolutions do (last-bit differences; with one thread only
the first layer's, on 1-channel digits). Two checks:

- every step, from the same state, gives a member the loss vector and the weights its seed's
  step alone gives, to 1e-5 relative (the member's state is handed to the run alone before
  each of the 60 steps): :func:`test_every_step_equals_the_step_alone`;
- whole runs: noisy-label SGD amplifies last-bit differences (measured: 1e-7 at step 8 to
  1e-4 at step 14 for CE at lr 0.05), so losses are compared to 1e-3 relative and accuracies,
  argmaxes that flip on near-ties, to 3 points; lr 0.02 keeps the drift small.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lci import hfta
from lci.config import TrainConfig
from lci.engine import TERMS
from lci.errors import ConfigError
from lci.fused import FusedTrainer
from lci.models import create_model
from lci.trainer import Trainer

SEEDS = [0, 1, 2]
# 640 training images / batch 32 = 20 steps per epoch: 3 epochs = 60 steps, label correction
# from step 15 on (correction_start 0.25)
SMALL = dict(dataset="digits", noise="sym:0.4", epochs=3, train_subset=640, batch_size=32,
             device="cpu", threads=1)
TIMING = ("epoch_s", "samples_per_s")
LOSSES = TERMS + ("loss",)


def _cfg(method: str, **kw) -> TrainConfig:
    return TrainConfig(method=method, **{**SMALL, **kw})


def _assert_same(alone: dict, fused: dict, where: str) -> None:
    assert set(alone) == set(fused), where
    for k, a in alone.items():
        if k in TIMING:
            continue
        b = fused[k]
        if k in LOSSES or k in ("lr", "epoch"):
            assert b == pytest.approx(a, rel=1e-3, abs=1e-5), f"{where}: {k} {a} vs {b}"
        else:
            assert b == pytest.approx(a, abs=0.03), f"{where}: {k} {a} vs {b}"


def _alone(cfg: TrainConfig, epochs: int):
    tr = Trainer(cfg)
    return tr, [tr.train_epoch() for _ in range(epochs)]


@pytest.mark.parametrize("method", ["lci", "ce"])
def test_every_step_equals_the_step_alone(method):
    base = _cfg(method)
    ft = FusedTrainer([base.replace(seed=s) for s in SEEDS])
    eng, bs = ft.engine, ft.batch_size
    alone = [Trainer(m.cfg) for m in ft.members]
    steps = 0
    for epoch in range(base.epochs):
        lr = 0.05 * (1 - epoch / 10)
        eng.set_lr(lr)
        eng.train()
        perms = torch.stack([torch.randperm(m.n_train, generator=m.gen) for m in ft.members])
        for tr in alone:
            tr.engine.train()
            perm = torch.randperm(tr.n_train, generator=tr.gen)
            tr.perm = perm
        for i in range(ft.steps_per_epoch):
            eng.copy_out(optimizer=True)
            for m, tr in zip(ft.members, alone):  # the same state, handed over
                tr.engine.load_state_dict(m.engine.state_dict())
                tr.engine.set_lr(lr)
            vec = eng.step_vector(*ft._batch(perms[:, i * bs:(i + 1) * bs]))
            eng.copy_out()
            for j, (m, tr) in enumerate(zip(ft.members, alone)):
                idx = tr.perm[i * bs:(i + 1) * bs]
                assert torch.equal(idx, perms[j, i * bs:(i + 1) * bs])
                own = tr.engine.step_vector(tr.x_train[idx], tr.y_noisy[idx])
                torch.testing.assert_close(vec[:, j], own, rtol=1e-5, atol=1e-7)
                for a, b in zip(m.engine.theta.parameters(), tr.engine.theta.parameters()):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
                assert float(eng.mu[j]) == pytest.approx(float(tr.engine.mu), rel=1e-6)
            steps += 1
    assert steps >= 50
    if method == "lci":  # label correction ran for most of the steps
        assert eng.correction_step < steps / 2 and eng.in_correction_phase()


@pytest.mark.parametrize("method", ["lci", "ce"])
def test_members_equal_their_seed_alone(method):
    base = _cfg(method, lr=0.02)
    ft = FusedTrainer([base.replace(seed=s) for s in SEEDS])
    assert ft.steps_per_epoch * base.epochs >= 50
    if method == "lci":
        assert 0 < ft.engine.correction_step < ft.steps_per_epoch * base.epochs
    fused = [ft.train_epoch() for _ in range(base.epochs)]
    assert ft.done
    for j, seed in enumerate(SEEDS):
        tr, alone = _alone(base.replace(seed=seed), base.epochs)
        for e in range(base.epochs):
            _assert_same(alone[e], fused[e][j], f"seed {seed} epoch {e + 1}")
        assert float(ft.engine.mu[j]) == pytest.approx(float(tr.engine.mu), rel=1e-4, abs=1e-7)


def test_graph_path_without_capture_equals_eager():
    """The CUDA-graph path (static buffers, device lr, phase switch) run without capturing,
    as CPU allows: the same losses as the eager fused step."""
    base = _cfg("lci", epochs=2, correction_start=0.5)
    eager = FusedTrainer([base.replace(seed=s) for s in SEEDS[:2]])
    graph = FusedTrainer([base.replace(seed=s) for s in SEEDS[:2]])
    assert graph.engine.use_cuda_graphs("auto", capture=False)
    for _ in range(2):
        a, b = eager.train_epoch(), graph.train_epoch()
        for x, y in zip(a, b):
            for k in LOSSES:
                if k in x:
                    assert y[k] == pytest.approx(x[k], rel=1e-6)


def test_one_member_diverging_leaves_the_others():
    base = _cfg("lci", epochs=2)
    ft = FusedTrainer([base.replace(seed=s) for s in SEEDS])
    ft.train_epoch()
    # member 1's first convolution turns NaN: its loss does, the others' must not
    conv = ft.engine.theta.net.features[0]
    with torch.no_grad():
        shape = (conv.weight.shape[0] // 3, *conv.weight.shape[1:])
        hfta.member_view(conv.weight, 3, 1, shape).fill_(math.nan)
    second = ft.train_epoch()
    assert second[1] is None and "DivergenceError" in ft.failed[1]
    assert ft.done and ft.live() == [0, 2]
    for j in (0, 2):
        _, alone = _alone(base.replace(seed=SEEDS[j]), 2)
        _assert_same(alone[1], second[j], f"seed {SEEDS[j]} after member 1 diverged")
    results = ft.finish()
    assert results[1] is None and results[0]["epochs_done"] == 2


def test_checkpoint_resume_continues_each_member(tmp_path):
    base = _cfg("lci", epochs=2)
    cfgs = [base.replace(seed=s) for s in SEEDS[:2]]
    whole = FusedTrainer(cfgs)
    full = [whole.train_epoch() for _ in range(2)]
    first = FusedTrainer(cfgs, out_dirs=[str(tmp_path / "a0"), str(tmp_path / "a1")])
    first.train_epoch()
    path = first.save_checkpoint(str(tmp_path / "fused.pt"))
    resumed = FusedTrainer(cfgs, out_dirs=[str(tmp_path / "a0"), str(tmp_path / "a1")])
    resumed.load_checkpoint(path)
    assert resumed.epoch == 1 and resumed.engine.step_count == first.engine.step_count
    last = resumed.train_epoch()
    for j in range(2):
        _assert_same(full[1][j], last[j], f"member {j} resumed")
    # each member's part is a run's own checkpoint: a run alone continues it
    alone = Trainer(cfgs[1])
    alone.load_state_dict(torch.load(path, weights_only=False)["members"][1])
    _assert_same(full[1][1], alone.train_epoch(), "member 1 continued alone")


def test_member_run_folders(tmp_path):
    base = _cfg("ce", epochs=1)
    dirs = [str(tmp_path / f"s{s}") for s in SEEDS[:2]]
    ft = FusedTrainer([base.replace(seed=s) for s in SEEDS[:2]], out_dirs=dirs)
    ft.train_epoch()
    ft.finish()
    for d, seed in zip(dirs, SEEDS[:2]):
        names = sorted(p.name for p in (tmp_path / d).iterdir())
        assert names == ["config.json", "history.csv", "label_issues.csv", "result.json"]
        assert f'"seed": {seed}' in (tmp_path / d / "config.json").read_text()


@pytest.mark.parametrize("change, match", [
    (dict(lr=0.01), "differ only in seed"),
    (dict(seed=0), "distinct seeds"),
])
def test_refused_members(change, match):
    base = _cfg("ce", seed=0)
    other = base.replace(**{"seed": 1, **change})
    with pytest.raises(ConfigError, match=match):
        FusedTrainer([base, other])


def test_refused_fp16():
    with pytest.raises(ConfigError, match="fp16"):
        FusedTrainer([_cfg("ce", seed=s, amp="fp16") for s in (0, 1)])


@pytest.mark.parametrize("name", ["small_cnn", "preact_resnet34", "resnet18"])
def test_fused_network_computes_each_member(name):
    torch.manual_seed(0)
    models = [create_model(name, 10, in_channels=3, image_size=16) for _ in range(3)]
    fused = hfta.FusedNet(models)
    # round trip of the weights: out of the fused network into fresh members
    fresh = [create_model(name, 10, in_channels=3, image_size=16) for _ in range(3)]
    hfta.copy_out(fused.net, fresh)
    for a, b in zip(models, fresh):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), n
    x = torch.randn(3 * 4, 3, 16, 16)
    out = fused(x)  # train mode: batch statistics per member
    for i, m in enumerate(models):
        torch.testing.assert_close(out[4 * i:4 * (i + 1)], m(x[4 * i:4 * (i + 1)]),
                                   rtol=1e-5, atol=1e-5)
    # and each member's running statistics moved as its own forward moved them
    hfta.copy_out(fused.net, fresh)
    for a, b in zip(models, fresh):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6), n


def test_unknown_layer_is_refused():
    class Mixer(nn.Module):  # mixes channels: fusing it would mix members
        def forward(self, x):
            return x.mean(1, keepdim=True)

    with pytest.raises(ConfigError, match="cannot fuse a Mixer"):
        hfta.fuse([nn.Sequential(nn.Conv2d(1, 2, 3), Mixer()) for _ in range(2)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_equals_eager_fused_step():
    """On CUDA the fused step replays as CUDA graphs (one per label-correction phase): the
    same losses as the eager fused step, member by member."""
    base = _cfg("lci", device="cuda", epochs=3, amp="off")  # channels_last: auto (on)
    eager = FusedTrainer([base.replace(seed=s, cuda_graphs="off") for s in SEEDS])
    graph = FusedTrainer([base.replace(seed=s, cuda_graphs="on") for s in SEEDS])
    assert graph.cuda_graphs and graph.engine._graph is not None
    for _ in range(3):
        for x, y in zip(eager.train_epoch(), graph.train_epoch()):
            for k in LOSSES:
                if k in x:
                    assert y[k] == pytest.approx(x[k], rel=1e-3, abs=1e-5)
    assert graph.engine._graph.captures == 2  # before and after label correction
