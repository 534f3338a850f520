"""The training step as CUDA graphs: captured once, replayed every step.

A small network's eager step on a GPU is bound by the host: thousands of kernel launches from
Python, each a few microseconds, while the GPU runs each kernel in less. A CUDA graph records
every kernel of one whole :meth:`Engine.eager_step` (both views' augmentation, every forward
and loss, the backward, the fused optimizer update and the μ update) and replays them with
one launch.

What makes replay equal to eager:

- **Static buffers**: the batch and labels are copied into tensors the graph reads; the loss
  vector it writes is copied out after each replay.
- **The learning rate** is a device tensor the fused SGD kernel reads; ``set_lr`` fills it.
- **μ** is updated in place (``Engine._confidence``), the momentum buffers and parameters are
  updated in place by the optimizer, so replays carry state from step to step.
- **Label correction** switches at a fixed iteration (Python-side ``step_count``): one graph
  per phase, each captured when its phase first runs.
- **Random numbers**: the augmenter's generator is registered with each graph, so every
  replay draws fresh views and advances the generator as an eager step would.

Before each capture, ``WARMUP`` eager steps run on a side stream (they are real training
steps): they create the momentum buffers, fill the augmenter's constants, and let cuDNN pick
its kernels, none of which may happen during capture. ``capture=False`` runs the same path
(static buffers, tensor lr, phase switch) without capturing, so that CPU tests cover it.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

#: eager steps on a side stream before each capture (PyTorch's guidance: a few)
WARMUP = 3


def graph_unsupported(engine) -> Optional[str]:
    """Why this engine's step cannot be captured, or None."""
    if engine.device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run uses {engine.device}"
    if engine.scaler is not None:
        return "the fp16 GradScaler reads its scale back to the host (use amp=bf16)"
    if engine.cfg.compile:
        return "compile=true (torch.compile) manages its own graphs"
    return None


class GraphStep:
    """``step(x, y) -> loss vector`` by replaying a captured :meth:`Engine.eager_step`."""

    def __init__(self, engine, capture: bool = True):
        self.engine = engine
        self.capture = capture
        dev = engine.device
        groups = engine.optimizer.param_groups
        # the lr as a device tensor that the fused optimizer reads at replay time
        self.lr = torch.tensor(float(groups[0]["lr"]), device=dev, dtype=torch.float32)
        for group in groups:
            group["lr"] = self.lr
        self.static_x: Optional[torch.Tensor] = None
        self.static_y: Optional[torch.Tensor] = None
        self.graphs: Dict[bool, "torch.cuda.CUDAGraph"] = {}
        self.outputs: Dict[bool, torch.Tensor] = {}
        self.warm: Dict[bool, int] = {}  # eager steps run so far per phase
        self.captures = 0                # how many graphs were captured (tests, benchmarks)

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)  # a kernel on the device's stream, no host sync

    def reset(self) -> None:
        """Drop the graphs (they hold addresses of tensors that a state load replaced)."""
        self.graphs.clear()
        self.outputs.clear()
        self.warm.clear()
        groups = self.engine.optimizer.param_groups
        for group in groups:  # a loaded state dict brings a Python-float lr
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):
                self.lr.fill_(float(lr))
            group["lr"] = self.lr

    def _stage(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if (self.static_x is None or self.static_x.shape != x.shape
                or self.static_y.shape != y.shape):
            if self.graphs:  # a new batch shape: the captured graphs no longer fit
                self.graphs.clear()
                self.outputs.clear()
                self.warm.clear()
            self.static_x = torch.empty_like(x)
            self.static_y = torch.empty_like(y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eng = self.engine
        self._stage(x, y)
        phase = eng.in_correction_phase()
        if not self.capture:
            return eng.eager_step(self.static_x, self.static_y).clone()
        graph = self.graphs.get(phase)
        if graph is not None:
            graph.replay()
            return self.outputs[phase].clone()  # the next replay overwrites the output
        if self.warm.get(phase, 0) < WARMUP:
            self.warm[phase] = self.warm.get(phase, 0) + 1
            return self._side_stream(lambda: eng.eager_step(self.static_x, self.static_y))
        return self._capture(phase)

    def _side_stream(self, fn):
        """Run ``fn`` on a side stream (PyTorch's warm-up protocol before a capture)."""
        cur = torch.cuda.current_stream(self.engine.device)
        side = torch.cuda.Stream(self.engine.device)
        side.wait_stream(cur)
        with torch.cuda.stream(side):
            out = fn()
        cur.wait_stream(side)
        out.record_stream(cur)  # made on the side stream, read on this one
        return out

    def _capture(self, phase: bool) -> torch.Tensor:
        eng = self.engine
        graph = torch.cuda.CUDAGraph()
        for gen in eng.generators():  # the views' draws advance each generator at each replay
            graph.register_generator_state(gen)
        # phases share one memory pool: they never run at the same time
        pool = next(iter(self.graphs.values())).pool() if self.graphs else None
        with torch.cuda.graph(graph, pool=pool):  # captures on its own side stream
            out = eng.eager_step(self.static_x, self.static_y)
        self.graphs[phase], self.outputs[phase] = graph, out
        self.captures += 1
        graph.replay()  # capture records only: this step's work runs now
        return out.clone()
