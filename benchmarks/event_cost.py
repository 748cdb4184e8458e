"""Host cost of one learning event in the paper's configuration: emulator vs PyTorch vs bare loop.

The paper's event (arXiv 2110.10486): MobileNet-V1 1.0/128, LR layer 27 (the head is the
1024 -> 50 linear layer), 300 new images, 1500 LRs at 8 bits, mini-batches of 128 with 21 new,
4 epochs -- 15 mini-batches per epoch, as :func:`device.learning.ar1.plan_event` cuts it. Three
ways of
doing that work are timed in the same process, interleaved (e, a, b, then b, a, e, and again:
whatever runs right after PyTorch is slowed down, so (e) and (b) follow it equally often):

(e) emulator: ``device.node.engine.NodeEngine.apply`` on a He-initialised MobileNet-V1 bundle split
    at layer 27 -- INT8 frozen stage (onnxruntime), numpy head training with dequantized
    replays, AR1* LR memory update, energy bookkeeping, the SQLite commit (fsync included) and
    the telemetry encoded as its MQTT payload. The LR memory is full (1500) before timing.
(a) PyTorch: a plain CPU script of the same computation: FP32 forward of the new images through
    the same MobileNet-V1 up to the LR layer (``torch.inference_mode``), then ``nn.Linear``
    trained with ``optim.SGD`` (the paper's rate 0.001, momentum 0.9, decay 5e-4) on the same
    plan, new latents plus replays drawn from an 8-bit LR memory and dequantized, and the memory
    updated with as many new latents as the emulator stores. No I/O.
(b) bare: the bundle's ``frozen.onnx`` in its own onnxruntime session, the input normalised,
    then the same numpy head training (:func:`device.learning.learner.train_event`) on replays drawn
    from a plain float32 array. Nothing else: no LR memory update, no store, no telemetry.

Threads: one for all three by default (``torch.set_num_threads``, onnxruntime intra-op
threads, BLAS through threadpoolctl), because that is how a node runs in a fleet (one event per
worker thread, BLAS limited to one) and per-event cost on one core is what a fleet's size is
bounded by; ``--threads N`` gives all three N instead. The ratios are of medians of CPU seconds
of the process (with one thread: core-seconds, as ``benchmarks/event_speed.py`` counts them,
and steadier than wall time on a shared machine); the wall-time ratios are printed and saved too.

    pip install -e '.[bench]'   # PyTorch (CPU), only for this benchmark
    python benchmarks/event_cost.py --quick

PyTorch is optional: without it, (a) is skipped and the script says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from _host import host

N_NEW, N_LR, LR_BITS, MB, NEW_PER_MB, EPOCHS = 300, 1500, 8, 128, 21, 4
LR_LAYER, RES, CLASSES = 27, 128, 50
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 1e-3, 0.9, 5e-4  # the paper's SGD (SGDConfig defaults)
RESULT = Path(__file__).parent / "results" / "event_cost.json"
INSTALL_TORCH = "pip install -e '.[bench]'  (or: pip install 'torch>=2.3')"


def load_torch() -> Any | None:
    """The torch module, or None when it is not installed (it is an optional extra)."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def mobilenet_bundle(cache: Path) -> Any:
    """The He-initialised MobileNet-V1 1.0/128 bundle split at LR layer 27, built once."""
    from device.model.bundle import ModelBundle
    from device.model.mobilenet_build import build_mobilenet_v1

    target = cache / f"bench-mobilenet-v1-1.0-{RES}-l{LR_LAYER}"
    if not (target / "model.toml").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".bench-mobilenet-", dir=cache))
        build_mobilenet_v1(tmp / "bundle", res=RES, lr_layer=LR_LAYER, classes=CLASSES)
        try:
            os.rename(tmp / "bundle", target)
        except OSError:  # another run finished first
            if not (target / "model.toml").is_file():
                raise
    return ModelBundle.load(target)


class Emulator:
    """(e) one NodeEngine over a temporary state directory, LR memory filled before timing."""

    def __init__(self, bundle: Any, state_dir: Path, threads: int) -> None:
        from dataset_stream.protocol import Batch
        from device.learning.learner import TrainConfig
        from device.learning.nn import SGDConfig
        from device.model.frozen import FrozenStage
        from device.node.engine import NodeEngine
        from device.node.settings import NodeSettings, ReplaySettings

        self._batch = Batch
        settings = NodeSettings(
            "bench-0000",
            state_dir,
            replay=ReplaySettings(N_LR, LR_BITS),
            train=TrainConfig(epochs=EPOCHS, mb_size=MB, new_per_mb=NEW_PER_MB),
            sgd=SGDConfig(LEARNING_RATE, MOMENTUM, WEIGHT_DECAY),
        )
        self.engine = NodeEngine(settings, bundle, FrozenStage(bundle, threads=threads))
        self.seq = 0

    def event(self, x: np.ndarray, y: np.ndarray) -> int:
        """One learning event; returns how many LRs it stored."""
        self.seq += 1
        written = self.engine.memory.writes_for(len(y))
        batch = self._batch(x, y, seq=self.seq, t=1.764e9 + 60 * self.seq, source="bench")
        outcome = self.engine.apply(batch)
        outcome.telemetry.to_json()  # what the node publishes
        if not outcome.learned:
            raise SystemExit("error: the emulated battery ran out; use fewer --repeats")
        return written

    def fill(self, x: np.ndarray, y: np.ndarray) -> None:
        while self.engine.memory.size < N_LR:
            self.event(x, y)


class Bare:
    """(b) the frozen.onnx session + the numpy head training, nothing else."""

    def __init__(self, bundle: Any, threads: int, rng: np.random.Generator) -> None:
        import onnxruntime as ort

        from device.learning.nn import SGD, SGDConfig

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(bundle.frozen_path), opts, providers=["CPUExecutionProvider"]
        )
        self.bundle = bundle
        self.head = bundle.build_head()
        self.optimizer = SGD(SGDConfig(LEARNING_RATE, MOMENTUM, WEIGHT_DECAY))
        self.replay_x = rng.random((N_LR, *bundle.lr_shape), dtype=np.float32)
        self.replay_y = rng.integers(0, CLASSES, N_LR)

    def sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        index = rng.choice(N_LR, size=k, replace=False)
        return self.replay_x[index], self.replay_y[index]

    def event(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        from device.learning.learner import TrainConfig, train_event

        b = self.bundle
        name = self.session.get_inputs()[0].name
        latents = np.concatenate(
            [
                self.session.run([b.lr_tensor], {name: b.input.normalize(x[i : i + 256])})[0]
                for i in range(0, len(x), 256)
            ]
        )
        train_event(
            self.head,
            self.optimizer,
            latents,
            y,
            replay=self.sample,
            n_replay=N_LR,
            config=TrainConfig(epochs=EPOCHS, mb_size=MB, new_per_mb=NEW_PER_MB),
            rng=rng,
        )


class TorchReference:
    """(a) plain PyTorch on the CPU: FP32 MobileNet-V1 to the LR layer, nn.Linear head, SGD."""

    def __init__(self, torch: Any, threads: int, seed: int) -> None:
        from device.model.mobilenet import conv_steps

        nn = torch.nn
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        layers: list[Any] = []
        for st in conv_steps(1.0):
            groups = st.in_ch if st.kind == "depthwise" else 1
            pad = 1 if st.kernel == 3 else 0
            layers.append(nn.Conv2d(st.in_ch, st.out_ch, st.kernel, st.stride, pad, groups=groups))
            layers.append(nn.ReLU6())
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.torch = torch
        self.frozen = nn.Sequential(*layers).eval()
        self.head = nn.Linear(1024, CLASSES)
        self.optimizer = torch.optim.SGD(
            self.head.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
        self.mem_codes = torch.randint(0, 256, (N_LR, 1024), dtype=torch.uint8)
        self.mem_scale = torch.rand(N_LR, 1) * 0.05
        self.mem_zero = torch.full((N_LR, 1), 128.0)
        self.mem_y = torch.randint(0, CLASSES, (N_LR,))

    def event(self, x: np.ndarray, y: np.ndarray, n_written: int, seed: int) -> None:
        from device.learning.ar1 import plan_event

        torch = self.torch
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            images = (torch.from_numpy(x).float() - 127.5) / 127.5
            latents = torch.cat([self.frozen(images[i : i + 256]) for i in range(0, len(x), 256)])
        labels = torch.from_numpy(y)
        plan = plan_event(len(y), N_LR, mb_size=MB, new_per_mb=NEW_PER_MB, epochs=EPOCHS)
        bounds = np.cumsum((0, *plan.new_sizes)).tolist()
        for _ in range(plan.epochs):
            order = torch.randperm(len(y), generator=gen)
            for (start, stop), n_replays in zip(
                itertools.pairwise(bounds), plan.replay_sizes, strict=True
            ):
                idx = order[start:stop]
                slots = torch.randperm(N_LR, generator=gen)[:n_replays]
                codes = self.mem_codes[slots].float()
                replays = (codes - self.mem_zero[slots]) * self.mem_scale[slots]
                xb = torch.cat([latents[idx], replays])
                yb = torch.cat([labels[idx], self.mem_y[slots]])
                self.optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.head(xb), yb)
                loss.backward()
                self.optimizer.step()
        # the LR memory update: n_written new latents, 8-bit per-row affine, into random slots
        pick = torch.randperm(len(y), generator=gen)[:n_written]
        slots = torch.randperm(N_LR, generator=gen)[:n_written]
        new = latents[pick]
        low, high = new.min(dim=1, keepdim=True).values, new.max(dim=1, keepdim=True).values
        scale = ((high - low) / 255).clamp_min(1e-12)
        zero = (-low / scale).round()
        self.mem_codes[slots] = (new / scale + zero).round().clamp(0, 255).to(torch.uint8)
        self.mem_scale[slots], self.mem_zero[slots], self.mem_y[slots] = scale, zero, labels[pick]


def timed(fn: Callable[..., object], *args: Any) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(repeats: int, threads: int, cache: Path) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    torch = load_torch()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N_NEW, 3, RES, RES), dtype=np.uint8)
    y = rng.integers(0, CLASSES, N_NEW)
    bundle = mobilenet_bundle(cache)
    times: dict[str, list[tuple[float, float]]] = {"emulator": [], "torch": [], "bare": []}
    with ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="event-cost-")))
        emulator = Emulator(bundle, state, threads)
        stack.callback(emulator.engine.close)
        bare = Bare(bundle, threads, rng)
        reference = None if torch is None else TorchReference(torch, threads, seed=0)
        emulator.fill(x, y)  # the paper's event replays 1500 LRs: fill the memory first
        runs: dict[str, Callable[[int], object]] = {
            "emulator": lambda r: emulator.event(x, y),
            "bare": lambda r: bare.event(x, y, np.random.default_rng(100 + r)),
        }
        if reference is not None:
            ref = reference
            runs["torch"] = lambda r: ref.event(
                x, y, emulator.engine.memory.writes_for(N_NEW), 100 + r
            )
        for name in ("bare", "torch"):  # warm-up, untimed: first-call allocations, caches
            if name in runs:
                runs[name](-1)
        kinds = [k for k in ("emulator", "torch", "bare") if k in runs]
        for r in range(repeats):
            # e, a, b, then b, a, e: whatever runs right after PyTorch is slowed down (about
            # 10-20 % measured here), so the emulator and the bare loop follow it equally often
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                times[kind].append(timed(runs[kind], r))
            print(
                f"repeat {r + 1}/{repeats}: "
                + ", ".join(f"{k} {v[-1][0]:.3f} s" for k, v in times.items() if v),
                flush=True,
            )
    from device.learning.ar1 import plan_event

    plan = plan_event(N_NEW, N_LR, mb_size=MB, new_per_mb=NEW_PER_MB, epochs=EPOCHS)
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items() if v}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items() if v}
    result: dict[str, Any] = {
        "config": {
            "model": f"MobileNet-V1 1.0/{RES}",
            "lr_layer": LR_LAYER,
            "n_new": N_NEW,
            "n_lr": N_LR,
            "lr_bits": LR_BITS,
            "mb_size": MB,
            "new_per_mb": NEW_PER_MB,
            "epochs": EPOCHS,
            "minibatches_per_epoch": plan.minibatches,
            "minibatch": plan.describe(),
        },
        "threads": threads,
        "repeats": repeats,
        "median_wall_s": {k: round(v, 4) for k, v in wall.items()},
        "median_cpu_s": {k: round(v, 4) for k, v in cpu.items()},
        "wall_s_all": {k: [round(w, 4) for w, _ in v] for k, v in times.items()},
        # ratios of CPU seconds (one thread: core-seconds, as benchmarks/event_speed.py counts
        # them), steadier than wall time on a shared machine; the wall-time ratios next to them
        "emulator_over_bare": round(cpu["emulator"] / cpu["bare"], 3),
        "torch_over_emulator": None,
        "wall_emulator_over_bare": round(wall["emulator"] / wall["bare"], 3),
        "wall_torch_over_emulator": None,
        "host": host(),
        "versions": {
            "numpy": np.__version__,
            "torch": None if torch is None else torch.__version__,
        },
    }
    if "torch" in wall:
        result["torch_over_emulator"] = round(cpu["torch"] / cpu["emulator"], 3)
        result["wall_torch_over_emulator"] = round(wall["torch"] / wall["emulator"], 3)
    import onnxruntime

    result["versions"]["onnxruntime"] = onnxruntime.__version__
    return result


def readme_line(r: dict[str, Any]) -> str:
    w = r["median_cpu_s"]
    torch_part = (
        f"PyTorch {w['torch']:.2f} ({r['torch_over_emulator']:.1f}x the emulator)"
        if r["torch_over_emulator"] is not None
        else "PyTorch not installed"
    )
    return (
        f"| one paper event (MobileNet-V1 128, LR layer 27, 300 new + 1500 LRs), "
        f"{r['threads']} thread, CPU s | emulator {w['emulator']:.2f}, {torch_part}, "
        f"bare ORT+numpy {w['bare']:.2f} (emulator {r['emulator_over_bare']:.2f}x) | "
        f"{r['host']['cores']} cores, {r['host']['cpu']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=16, help="timed events of each kind (even)")
    parser.add_argument("--quick", action="store_true", help="6 repeats (about a minute)")
    parser.add_argument("--threads", type=int, default=1, help="threads for all three (1)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON result (default: {RESULT.name} for a full run; a --quick run writes none)",
    )
    args = parser.parse_args()
    repeats = 6 if args.quick else args.repeats
    if repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    if load_torch() is None:
        print(f"PyTorch is not installed: the PyTorch reference (a) is skipped. {INSTALL_TORCH}")
    env_cache = os.environ.get("VEGA_EMU_CACHE")
    with tempfile.TemporaryDirectory(prefix="event-cost-bundle-") as tmp:
        cache = Path(env_cache) if env_cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        result = measure(repeats, args.threads, cache)
    result["quick"] = args.quick
    print(f"threads: {args.threads} for all three; {repeats} repeats; medians per event:")
    print(f"  CPU s  {result['median_cpu_s']}")
    print(f"  wall s {result['median_wall_s']}")
    if result["torch_over_emulator"] is not None:
        print(
            f"torch/emulator = {result['torch_over_emulator']:.2f} (target >= 6; "
            f"wall time: {result['wall_torch_over_emulator']:.2f})"
        )
    else:
        print(f"torch/emulator: not measured (PyTorch missing). {INSTALL_TORCH}")
    print(
        f"emulator/bare = {result['emulator_over_bare']:.3f} (target <= 1.25; "
        f"wall time: {result['wall_emulator_over_bare']:.3f})"
    )
    print(readme_line(result))
    out = args.out if args.out is not None else None if args.quick else RESULT
    if out is not None:  # a quick look never overwrites the full run the README quotes
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
