"""The captured step (lci.graphstep): the same losses as the eager step, with the learning
rate and the label-correction switch working under replay.

On a CPU the graph path runs without capturing (static buffers, device lr, one path per
correction phase); the CUDA tests capture and replay real CUDA graphs and are skipped without a
GPU. The GPU machine has no pytest: ``python tests/test_graph_step.py`` runs the CUDA tests as
a script (exit status 1 if one fails).
"""
import sys

import torch

try:
    import pytest
except ImportError:  # run as a script on a machine without pytest
    pytest = None

from lci.augment import Augmenter
from lci.config import TrainConfig
from lci.engine import Engine
from lci.errors import ConfigError
from lci.models import create_model

HAS_CUDA = torch.cuda.is_available()
needs_cuda = (pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device") if pytest
              else (lambda f: f))
parametrize = pytest.mark.parametrize if pytest else (lambda *a, **k: (lambda f: f))
TOTAL_STEPS = 40  # label correction starts at step 10 of the 20 run here


def make_engine(device: torch.device, graph: str = "off", capture=None, **kw) -> Engine:
    """An lci engine on 8x8 digit-shaped batches (small_cnn), built as Trainer builds it."""
    cfg = TrainConfig(dataset="digits", method=kw.pop("method", "lci"), device=device.type,
                      seed=0, eval_train=False, **kw).resolved()
    gen = torch.Generator(device=device).manual_seed(0)
    aug = Augmenter((0.5,), (0.3,), pad=1, hflip=True, mode=cfg.augment, generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        eng = Engine(cfg, lambda: create_model("small_cnn", 10, in_channels=1, image_size=8),
                     10, aug, device, total_steps=TOTAL_STEPS)
    eng.use_cuda_graphs(graph, capture=capture)
    eng.train()
    return eng


def batches(device: torch.device, n: int = 4, b: int = 32):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, b, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n, b), generator=g)
    return x.to(device), y.to(device)


def run(eng: Engine, xs, ys, steps: int = 20) -> torch.Tensor:
    """``steps`` steps; the lr changes once in each correction phase, as at an epoch start."""
    out = []
    for i in range(steps):
        if i in (7, 16):
            eng.set_lr(0.05 * (0.5 if i == 7 else 0.1))
        out.append(eng.step_vector(xs[i % len(xs)], ys[i % len(ys)]))
    return torch.stack(out)


def params(eng: Engine):
    return torch.cat([p.detach().flatten() for m in eng.models() for p in m.parameters()])


def compare(device, capture, rtol, atol, **kw):
    """Eager and graph engines over the same 20 steps: the loss vectors agree within
    ``rtol``/``atol``, the parameters within ``rtol`` in relative norm, μ likewise."""
    xs, ys = batches(device)
    eager = make_engine(device, "off", **kw)
    graph = make_engine(device, "on" if capture else "auto", capture=capture, **kw)
    assert graph._graph is not None
    a, b = run(eager, xs, ys), run(graph, xs, ys)
    assert eager.step_count == graph.step_count == 20
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    err = ((a - b).abs() / (a.abs() + atol)).max().item()
    assert torch.allclose(a, b, rtol=rtol, atol=atol), f"losses: max relative difference {err:.2e}"
    pa, pb = params(eager), params(graph)
    perr = ((pa - pb).norm() / pa.norm()).item()
    assert perr <= rtol, f"parameters: relative difference {perr:.2e}"
    merr = ((eager.mu - graph.mu).abs() / (eager.mu.abs() + atol)).item()  # baselines: μ = 0
    assert merr <= rtol, f"mu: relative difference {merr:.2e}"
    return graph, err


# ------------------------------------------------------------------------------------- CPU


@parametrize("kw", [{}, dict(method="gjs"), dict(method="gjs", fuse_views=True)],
              ids=["lci", "gjs two forwards", "gjs one batch"])
def test_graph_path_computes_the_eager_losses_on_cpu(kw):
    """Static buffers, the lr as a tensor and the per-phase path: 20 steps, both correction
    phases, two lr changes, the same losses, parameters and μ as the eager step (and GJS's
    two views through θ in two forwards, its scripts' way, or in one)."""
    graph, _ = compare(torch.device("cpu"), capture=False, rtol=1e-5, atol=1e-6, **kw)
    assert graph._graph.captures == 0  # nothing captured on a CPU


def test_graphs_on_without_cuda_is_a_config_error():
    eng = make_engine(torch.device("cpu"))
    with pytest.raises(ConfigError, match="cuda_graphs=on"):
        eng.use_cuda_graphs("on")
    assert eng.use_cuda_graphs("auto") is False and eng._graph is None


def test_cuda_graphs_key_accepts_yaml_booleans_and_rejects_others():
    assert TrainConfig(cuda_graphs=True).cuda_graphs == "on"
    assert TrainConfig(cuda_graphs="off").cuda_graphs == "off"
    with pytest.raises(ConfigError, match="cuda_graphs"):
        TrainConfig(cuda_graphs="maybe")


def test_checkpoint_of_a_graph_engine_holds_a_plain_lr():
    eng = make_engine(torch.device("cpu"), "auto", capture=False)
    xs, ys = batches(torch.device("cpu"))
    eng.step_vector(xs[0], ys[0])
    eng.set_lr(0.02)
    sd = eng.state_dict()
    assert all(isinstance(g["lr"], float) for g in sd["optimizer"]["param_groups"])
    assert abs(sd["optimizer"]["param_groups"][0]["lr"] - 0.02) < 1e-8
    eng.load_state_dict(sd)  # the device lr is put back in the optimizer's groups
    assert eng.optimizer.param_groups[0]["lr"] is eng._graph.lr


# ------------------------------------------------------------------------------------ CUDA


def cuda_replay_float32() -> float:
    graph, err = compare(torch.device("cuda"), capture=True, rtol=1e-3, atol=1e-4, amp="off")
    assert graph._graph.captures == 2, graph._graph.captures  # one graph per correction phase
    return err


def cuda_replay_bf16_view_fused() -> float:
    return compare(torch.device("cuda"), capture=True, rtol=2e-2, atol=1e-3,
                   correction_source="view", fuse_views=True)[1]


def cuda_replay_gjs_float32() -> float:
    """GJS as its presets train it: float32, two forwards of θ (one per view)."""
    return compare(torch.device("cuda"), capture=True, rtol=1e-3, atol=1e-4, amp="off",
                   method="gjs")[1]


@needs_cuda
def test_cuda_graph_replay_matches_eager_gjs_float32():
    cuda_replay_gjs_float32()


@needs_cuda
def test_cuda_graph_replay_matches_eager():
    """Captured and replayed (float32: bf16 rounding would only add noise): the same losses
    as eager over 20 steps, with random crops and flips drawn inside the graph."""
    cuda_replay_float32()


@needs_cuda
def test_cuda_graph_replay_matches_eager_bf16_view_fused():
    cuda_replay_bf16_view_fused()


@needs_cuda
def test_cuda_trainer_with_graphs_reports_the_eager_metrics():
    from lci.trainer import Trainer

    base = dict(dataset="digits", method="lci", epochs=2, eval_train=True, device="cuda",
                seed=0, amp="off")
    runs = {}
    for mode in ("off", "on"):
        tr = Trainer(TrainConfig.from_dict({**base, "cuda_graphs": mode}))
        assert tr.cuda_graphs == (mode == "on")
        runs[mode] = [tr.train_epoch() for _ in range(2)]
    for e, g in zip(runs["off"], runs["on"]):
        assert set(e) == set(g)
        assert abs(e["loss"] - g["loss"]) <= 1e-3 * abs(e["loss"]) + 1e-4, (e["loss"], g["loss"])
        assert abs(e["test_acc"] - g["test_acc"]) <= 0.02


if __name__ == "__main__":
    failed = 0
    checks = {"float32 replay": cuda_replay_float32, "bf16 view+fused": cuda_replay_bf16_view_fused,
              "gjs float32 replay": cuda_replay_gjs_float32,
              "trainer": test_cuda_trainer_with_graphs_reports_the_eager_metrics}
    for name, fn in checks.items():
        try:
            res = fn()
            print(f"PASS {name}" + (f"  (max relative difference {res:.2e})"
                                    if isinstance(res, float) else ""), flush=True)
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)
