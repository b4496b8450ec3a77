"""How close each experiment's training step comes to what the machine can do, measured in one run.

    .venv/bin/python benchmarks/limits.py [--configs fashion_cnn adder_transformer ...] [--steps 30] [--warmup 5]
        [--data-root data/real] [-- more litlab args for every config]

First the machine's ceilings on this device (the CPU here, the GPU when there is one): large fp32 and bf16 matrix
multiplies (FLOP/s) and a large memory copy (bytes/s, read plus write), the fastest of ten each. Then, per config, a
short `litlab fit` (no validation, checkpoints, logger or progress bar) with a probe callback that counts one training
step's FLOPs (`torch.utils.flop_counter.FlopCounterMode`: forward and backward) and the bytes its operators read and
write (inputs plus outputs of every aten operator: an upper bound on memory traffic, caches ignored; LSTM and GRU
layers, whose fused kernels the counter does not know, are counted from their sizes, `RecurrentFlops`), and times
`--steps` steps after `--warmup`: the median step, and the share of the step spent waiting for the next batch (from
the end of a step to the start of the next). Batches whose shape varies (text in length buckets) count FLOPs in
proportion to their elements, scaled from the counted batch. Printed per config: FLOPs per (median) step, median step
time, achieved FLOP/s and its share of the matmul ceiling in the run's precision, the data-wait share, the arithmetic
intensity (FLOPs per byte) and, where it is below the machine's balance point (memory-bound), the achieved bandwidth's
share of the measured copy bandwidth.

Configs read their real data from `--data-root` (the layouts `../shared/data/unpack` writes) where one is needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from throughput import in_scratch_dir  # noqa: E402

from litlab.cli import launch  # noqa: E402

DEFAULT_CONFIGS = [
    "xor_mlp", "curve_poly6", "fashion_cnn", "fashion_cnn_bn", "fashion_resnet", "cifar10_fast",
    "cifar10_resnet18_scratch", "imdb_bilstm", "imdb_fasttext", "imdb_transformer_scratch", "char_lstm",
    "char_gpt_cpu", "adder_lstm", "adder_transformer", "speech_ctc",
]  # fmt: skip


def data_args(config: str, root: Path) -> list[str]:
    """Where a config's family reads its real data under `root` (the official layouts)."""
    family = (ROOT / "configs" / f"{config}.yaml").read_text()
    if "fashion_mnist" in family or "cifar10" in family:
        return [f"--data.data_dir={root}"]
    if "datamodules.imdb" in family:
        return [f"--data.data_dir={root}"]
    if "char_corpus" in family:
        return [f"--data.text_files=[{root / 'jane_eyre.txt'}]"]
    if "spoken_digits" in family:
        return [f"--data.data_dir={root / 'fsdd'}"]
    if "fruit_detection" in family:
        return [f"--data.data_dir={root / 'fruit'}"]
    return []  # generated data


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int, best: bool = False) -> float:
    """The median (or, for a ceiling, the fastest) seconds of `fn()` over `repeats` runs, after one warm-up."""
    fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def ceilings() -> dict[str, float]:
    """Matmul FLOP/s in fp32 and bf16, and copy bytes/s, on this device: the fastest of ten, as a ceiling is what the
    machine reaches at best (a shared machine's other load only slows it)."""
    dev = device()
    n = 8192 if dev.type == "cuda" else 4096
    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        result[name] = 2 * n**3 / timed(lambda a=a, b=b: a @ b, 10, best=True)
    size = 2**28 if dev.type == "cuda" else 2**27  # bytes: 256 MB (GPU) / 128 MB (CPU), well past the caches
    src = torch.empty(size // 4, device=dev)
    dst = torch.empty_like(src)
    result["copy"] = 2 * size / timed(lambda: dst.copy_(src), 10, best=True)
    return result


class BytesCounter(TorchDispatchMode):
    """Bytes read and written by every aten operator: its tensor inputs plus its tensor outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


class RecurrentFlops:
    """FLOPs of `nn.LSTM`/`nn.GRU` layers on padded input, which `FlopCounterMode` does not count (their fused kernels
    have no formula; packed sequences run as matrix products it counts):
    per token, layer and direction 2 * gates * hidden * (input + hidden) in the forward pass, three times that with the
    backward pass. Counted by forward hooks during the probed step."""

    GATES = {torch.nn.LSTM: 4, torch.nn.GRU: 3}

    def __init__(self, model: torch.nn.Module) -> None:
        self.flops = 0
        self.hooks = [m.register_forward_hook(self.count) for m in model.modules() if type(m) in self.GATES]

    def count(self, module, inputs, output) -> None:
        x = inputs[0]
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            return  # run as separate matrix products, which the counter does count
        tokens = x.shape[:-1].numel()
        gates, hidden, directions = self.GATES[type(module)], module.hidden_size, 2 if module.bidirectional else 1
        size = module.input_size
        for _ in range(module.num_layers):
            self.flops += directions * 3 * 2 * gates * hidden * (size + hidden) * tokens
            size = hidden * directions

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


class StepProbe(L.Callback):
    """Counts step `warmup - 1`'s FLOPs and bytes, and times the steps after `warmup`: step and data-wait seconds."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.flops = self.bytes = 0
        self.steps: list[float] = []
        self.waits: list[float] = []
        self.sizes: list[int] = []  # each timed batch's elements, against the counted batch's (`size`)
        self.size = 1
        self._counters: tuple | None = None
        self._start = self._end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize()
        now = time.perf_counter()
        step = trainer.global_step
        if step > self.warmup:
            self.waits.append(now - self._end)
        size = sum(t.numel() for t in tree_flatten(batch)[0] if isinstance(t, torch.Tensor))
        if step > self.warmup:
            self.sizes.append(size)
        if step == self.warmup - 1:
            self.size = size
            self._counters = (FlopCounterMode(display=False), BytesCounter())
            self._recurrent = RecurrentFlops(pl_module)
            for counter in self._counters:
                counter.__enter__()
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize()
        now = time.perf_counter()
        if self._counters is not None:
            for counter in reversed(self._counters):
                counter.__exit__(None, None, None)
            self.flops = self._counters[0].get_total_flops() + self._recurrent.flops
            self.bytes = self._counters[1].bytes
            self._recurrent.remove()
            self._counters = None
        elif trainer.global_step > self.warmup:
            self.steps.append(now - self._start)
        self._end = now


def measure(config: str, steps: int, warmup: int, extra: list[str]) -> StepProbe:
    args = [
        "--config", str(ROOT / "configs" / f"{config}.yaml"), f"--trainer.max_steps={warmup + steps + 1}",
        "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false", "--trainer.max_epochs=-1",
        f"--trainer.callbacks+={{class_path: limits.StepProbe, init_args: {{warmup: {warmup}}}}}", *extra,
    ]  # fmt: skip
    cli = launch("fit", args)
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "StepProbe")  # limits.StepProbe, not __main__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "real")
    parser.add_argument("extra", nargs="*", help="more litlab arguments for every config, after --")
    args = parser.parse_args()
    root = args.data_root.resolve()
    in_scratch_dir()
    torch.set_float32_matmul_precision("high")

    peak = ceilings()
    balance = peak["fp32"] / peak["copy"]
    print(
        f"device {device()}: fp32 matmul {peak['fp32'] / 1e9:,.1f} GFLOP/s, bf16 matmul {peak['bf16'] / 1e9:,.1f} "
        f"GFLOP/s, copy {peak['copy'] / 1e9:,.1f} GB/s (balance {balance:.1f} FLOP/byte)",
        flush=True,
    )
    header = "config | GFLOP/step | median step ms | GFLOP/s | % of matmul peak | data wait % | FLOP/byte | % of bw"
    rows = [header, "|".join(["---"] * 8)]
    for config in args.configs:
        try:
            probe = measure(config, args.steps, args.warmup, [*data_args(config, root), *args.extra])
        except (Exception, SystemExit) as err:  # a config whose data is not here: say so, go on
            if isinstance(err, SystemExit) and err.code in (130, 143):  # stopped by Ctrl-C or SIGTERM: stop here
                raise
            reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
            rows.append(f"{config} | not measured: {reason}")
            print(rows[-1], flush=True)
            continue
        step = statistics.median(probe.steps)
        wait = statistics.median(probe.waits) if probe.waits else 0.0
        # batches of varying shape (text in length buckets): each step's FLOPs scaled from the counted one by its size
        scale = statistics.median(size / probe.size for size in probe.sizes)
        rate = statistics.median(probe.flops * size / probe.size / t for size, t in zip(probe.sizes, probe.steps))
        precision = "bf16" if any("bf16" in a for a in args.extra) else "fp32"
        intensity = probe.flops / max(probe.bytes, 1)
        bandwidth = f"{100 * probe.bytes * scale / step / peak['copy']:.0f}" if intensity < balance else "-"
        rows.append(
            f"{config} | {probe.flops * scale / 1e9:.3f} | {1e3 * step:.1f} | {rate / 1e9:.1f} | "
            f"{100 * rate / peak[precision]:.1f} | {100 * wait / (wait + step):.1f} | {intensity:.1f} | {bandwidth}"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
