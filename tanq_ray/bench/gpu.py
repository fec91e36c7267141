"""``tanq bench gpu``: the paper configuration on one GPU, each figure with its peak GPU memory.

Measured (paper sizes; ``quick`` or no CUDA: tiny sizes, seconds on a CPU, a
smoke test of the code and no measurement):

- seconds per training step (one D + G update) of TANQ (ResNet-9, ngf 64,
  256 x 256, batch 4 + 4, QS global, 256 patches) and CycleGAN, in fp32, in
  bf16 autocast (what ``train.bf16`` runs), in bf16 with channels_last, and
  with the networks under ``torch.compile`` (a failure is reported, not raised);
- the QS-Attn entropy ranking alone at the QS layers of a 256 x 256 image
  (4,096 positions x 256 channels, the source and hrT2 rows of a step) as one
  ``HW x HW`` softmax and streamed over row chunks, their largest relative
  difference and the overlap of the selected patches, and how many of the
  patches bf16 autocast selects differently from fp32;
- slices per second of the translate stage's actor
  (:class:`tanq_ray.translate.SliceTranslator`; where Ray or nibabel cannot be
  imported, the generator's ``translate`` plus the copy back to the host that
  the actor does);
- nnUNet iterations per second of our trainer, where it can be imported;
- the paper configuration's translator GPU-hours from these step times
  (deploy/capacity.py), beside the paper's 72 (RTX 3090, both translators).

Each time is a median after warm-up, with ``torch.cuda.synchronize`` around
it. A figure that could not be measured has value NaN and says why.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

import numpy as np
import torch

from tanq_ray.bench.report import Figure
from tanq_ray.models.base import Batch, TranslatorModel
from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.patches import attention_entropy, streamed_attention_entropy
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch

PAPER_TRANSLATOR_GPU_HOURS = 72.0  # both translators, one RTX 3090 (paper)
PAPER_S_PER_SLICE = {"tanq": 0.0669, "cyclegan": 0.0043}  # RTX 3090 (paper)
COMPILE_BUDGET_S = 240.0
"""No ``torch.compile`` attempt starts once the benchmark has run this long (compilation takes minutes)."""
MIB = 2**20
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the paper configuration, or a tiny one for CPUs and tests."""

    image: int
    batch: int
    ngf: int
    n_blocks: int
    nce_layers: tuple[int, ...]
    patches: int
    attention_grid: int
    """Side of the QS layers' feature map (image / 4)."""
    attention_channels: int
    chunk_rows: int
    translate_batch: int
    translate_batches: int
    warmup: int
    repeats: int


PAPER = Sizes(256, 4, 64, 9, (0, 4, 8, 12, 16), 256, 64, 256, 512, 8, 16, 3, 10)
TINY = Sizes(32, 2, 4, 3, (0, 4, 8, 12, 14), 16, 8, 32, 24, 4, 2, 0, 1)


@dataclass(frozen=True)
class Variant:
    """How a training step runs."""

    label: str
    bf16: bool
    channels_last: bool = False
    compiled: bool = False


VARIANTS = (
    Variant("fp32", False),
    Variant("bf16 autocast", True),
    Variant("bf16 autocast, channels_last", True, True),
    Variant("bf16 autocast, channels_last, torch.compile", True, True, True),
)


def not_measured(name: str, unit: str, why: str) -> Figure:
    """A row for a figure this run could not measure."""
    return Figure(name, math.nan, unit, note=f"not measured: {why}")


class Timer:
    """Median seconds per call and peak memory on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def peak(self) -> Iterator[list[float]]:
        """Yields a list that holds the peak allocated MiB of the block once it ends (NaN on CPU)."""
        result: list[float] = []
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        yield result
        result.append(torch.cuda.max_memory_allocated(self.device) / MIB if self.cuda else math.nan)

    def median(self, fn: Callable[[], object], warmup: int, repeats: int) -> float:
        """Median wall seconds of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def model_configs(sizes: Sizes) -> dict[str, TanqConfig | CycleGANConfig]:
    """TANQ and CycleGAN at ``sizes`` (the paper's defaults otherwise)."""
    shared = {"ngf": sizes.ngf, "n_blocks": sizes.n_blocks}
    return {
        "tanq": TanqConfig(**shared, nce_layers=sizes.nce_layers, num_patches=sizes.patches),
        "cyclegan": CycleGANConfig(**shared),
    }


def to_channels_last(model: TranslatorModel, batch: Batch) -> Batch:
    """The model's networks and the batch's images in channels_last memory format."""
    for net in model.nets.values():
        net.to(memory_format=torch.channels_last)
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in batch.items()}


def compile_networks(model: TranslatorModel) -> None:
    """Put each network's entry points under ``torch.compile``; optimisers and losses stay eager."""
    for net in model.nets.values():
        for method in ("forward", "forward_features", "encode_features"):
            if hasattr(net, method):
                setattr(net, method, torch.compile(getattr(net, method), dynamic=False))


def time_step(
    name: str, config: TanqConfig | CycleGANConfig, variant: Variant, sizes: Sizes, timer: Timer
) -> tuple[float, float, float]:
    """(median s/step, peak MiB, seconds of the first call: compilation included) of one variant."""
    torch.manual_seed(0)
    batch = synthetic_batch(sizes.batch, sizes.image, seed=0)
    batch = {k: v.to(timer.device) for k, v in batch.items()}  # type: ignore[assignment]
    with timer.peak() as peak:
        model = build_model(name, config, timer.device)
        if variant.channels_last:
            batch = to_channels_last(model, batch)
        if variant.compiled:
            compile_networks(model)

        def step() -> None:
            with torch.autocast(timer.device.type, dtype=torch.bfloat16, enabled=variant.bf16):
                model.step(batch)

        timer.sync()
        start = time.perf_counter()
        step()
        timer.sync()
        first = time.perf_counter() - start
        seconds = timer.median(step, sizes.warmup, sizes.repeats)
    del model
    return seconds, peak[0], first


def step_figures(sizes: Sizes, timer: Timer, started: float) -> tuple[list[Figure], dict[str, float]]:
    """Training-step rows for both translators and every variant; returns the bf16 s/step by model too."""
    figures, bf16 = [], {}
    side, batch = sizes.image, sizes.batch
    shape = f"{side}x{side}, batch {batch} + {batch}, ngf {sizes.ngf}, {sizes.n_blocks} blocks"
    for name, config in model_configs(sizes).items():
        baseline = math.nan
        for variant in VARIANTS:
            label = f"{name} train step, {variant.label}"
            if variant.compiled and timer.device.type != "cuda":
                figures.append(not_measured(label, "s/step", "compilation is timed on a GPU only (minutes on a CPU)"))
                continue
            if variant.compiled and time.perf_counter() - started > COMPILE_BUDGET_S:
                figures.append(not_measured(label, "s/step", f"over the {COMPILE_BUDGET_S:.0f} s budget for compiling"))
                continue
            try:
                seconds, mib, first = time_step(name, config, variant, sizes, timer)
            except Exception as err:  # noqa: BLE001 - torch.compile may fail on any backend error; report it
                figures.append(not_measured(label, "s/step", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))
                continue
            if variant.label == "fp32":
                baseline = seconds
            if variant.label == "bf16 autocast":
                bf16[name] = seconds
            note = f"{shape}; peak {mib:,.0f} MiB" + (f"; first call {first:.1f} s" if variant.compiled else "")
            figures.append(Figure(label, seconds, "s/step", "fp32", baseline, note))
            if not math.isnan(mib):
                figures.append(Figure(f"{name} peak memory, {variant.label}", mib, "MiB"))
            print(f"[bench gpu] {label}: {seconds:.4g} s/step, {mib:,.0f} MiB", flush=True)
    return figures, bf16


def attention_figures(sizes: Sizes, timer: Timer) -> list[Figure]:
    """QS-Attn entropy ranking, whole ``HW x HW`` softmax against row chunks; bf16 against fp32 selection."""
    torch.manual_seed(0)
    g, c, rows = sizes.attention_grid, sizes.attention_channels, sizes.chunk_rows
    # the QS layers' features: post-ReLU-like, unit scale, 2B images (source + hrT2)
    features = torch.randn(2 * sizes.batch, c, g, g, device=timer.device).relu_()
    results = {}
    for label, fn in (("full", attention_entropy), ("streamed", lambda f: streamed_attention_entropy(f, rows))):
        with timer.peak() as peak:
            seconds = timer.median(lambda: fn(features), sizes.warmup, sizes.repeats)
            entropy = fn(features)
        results[label] = (seconds, peak[0], entropy)
    full, streamed = results["full"][2], results["streamed"][2]
    rel_error = ((streamed - full).abs() / full.abs().clamp_min(1e-12)).max().item()
    keep = min(sizes.patches, g * g)
    overlap = _overlap(full.topk(keep, dim=1, largest=False).indices, streamed.topk(keep, dim=1, largest=False).indices)
    with torch.autocast(timer.device.type, dtype=torch.bfloat16):
        low = attention_entropy(features)
    bf16_overlap = _overlap(full.topk(keep, dim=1, largest=False).indices, low.topk(keep, dim=1, largest=False).indices)
    shape = f"{2 * sizes.batch} x {g * g} positions x {c} channels"
    print(f"[bench gpu] QS entropy full {results['full'][0]:.4g} s, streamed {results['streamed'][0]:.4g} s, "
          f"max rel. error {rel_error:.2e}", flush=True)  # fmt: skip
    return [
        Figure("QS-Attn entropy, full HW x HW softmax", results["full"][0], "s", note=f"{shape}; fp32"),
        Figure("QS-Attn entropy, streamed rows", results["streamed"][0], "s", "full", results["full"][0],
               f"{rows} rows at a time"),
        *(
            [
                Figure("QS-Attn entropy peak memory, full", results["full"][1], "MiB"),
                Figure("QS-Attn entropy peak memory, streamed", results["streamed"][1], "MiB", "full",
                       results["full"][1]),
            ]
            if timer.cuda
            else []
        ),
        Figure("QS-Attn entropy, streamed vs full: max relative error", rel_error, ""),
        Figure("QS-Attn selection, streamed vs full: same patches", overlap, "fraction", note=f"{keep} kept per image"),
        Figure("QS-Attn selection, bf16 autocast vs fp32: same patches", bf16_overlap, "fraction",
               note="entropy ranking under the training step's autocast"),
    ]  # fmt: skip


def _overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of the indices per row of ``a`` that are also in that row of ``b``."""
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / len(x) for x, y in zip(a, b)]))


def translate_figures(sizes: Sizes, timer: Timer) -> list[Figure]:
    """Slices per second of the translate stage's actor (or of ``translate`` where the actor cannot be imported)."""
    try:
        from tanq_ray.translate import SliceTranslator
    except ImportError as err:
        actor, why = None, f"{err.name} not importable"
    else:
        actor, why = SliceTranslator, ""
    figures = []
    for name, config in model_configs(sizes).items():
        torch.manual_seed(0)
        model = build_model(name, config, timer.device)
        data = synthetic_batch(sizes.translate_batch, sizes.image, seed=1)
        images, labels = data["source"], data["source_label"]
        with tempfile.TemporaryDirectory(prefix="tanq-bench-gpu-") as folder, timer.peak() as peak:
            if actor is None:
                what = f"{name}.translate + copy to host ({why}: not the Ray actor)"

                def run() -> None:
                    model.translate(images, labels).float().cpu().numpy()
            else:
                what = "SliceTranslator actor class, without Ray"
                run = _actor_call(actor, model, name, images, labels, sizes.image, Path(folder), timer.device)
            seconds = timer.median(lambda: [run() for _ in range(sizes.translate_batches)], sizes.warmup, sizes.repeats)
        per_slice = seconds / (sizes.translate_batches * sizes.translate_batch)
        print(f"[bench gpu] {name} translate: {1 / per_slice:.4g} slices/s", flush=True)
        figures += [
            Figure(f"{name} translate", 1 / per_slice, "slices/s", "paper, RTX 3090", 1 / PAPER_S_PER_SLICE[name],
                   f"{what}; batches of {sizes.translate_batch}; fp32; peak {peak[0]:,.0f} MiB"),
            Figure(f"{name} translate", per_slice, "s/slice", "paper, RTX 3090", PAPER_S_PER_SLICE[name]),
        ]  # fmt: skip
    return figures


def _actor_call(
    actor: type, model: TranslatorModel, name: str, images: torch.Tensor, labels: torch.Tensor, size: int,
    folder: Path, device: torch.device,
) -> Callable[[], object]:  # fmt: skip
    """One call of the actor on an Arrow batch of shard rows, with ``model`` exported and reloaded as the stage does."""
    import pyarrow as pa

    from tanq_ray.data.shards import encode_tensors
    from tanq_ray.train.export import export_generator

    path = export_generator(model, folder / name, size)
    translator = actor(str(path), size, str(device))
    n = len(images)
    batch = pa.table(
        {
            "case_id": pa.array(["bench"] * n),
            "slice_index": pa.array(np.arange(n, dtype=np.int64)),
            "image": encode_tensors(images[:, 0].numpy(), "image", n, (size, size)),
            "label": encode_tensors(labels.numpy(), "label", n, (size, size)),
        }
    )
    return lambda: translator(batch)


def nnunet_figures() -> list[Figure]:
    """nnUNet rows: not measured by this benchmark; the reason names what our trainer's imports lack here."""
    if importlib.util.find_spec("nnunetv2") is None:
        why = "nnunetv2 is not installed here"
    else:
        try:
            import tanq_ray.segment.trainer  # noqa: F401 - the package imports Ray and MLflow too
        except ImportError as err:
            why = f"our trainer (tanq_ray.segment) needs {err.name}, which is not installed here"
        else:
            why = "needs a preprocessed phantom at paper-like spacing; `tanq bench segment` times folds on CPU"
    return [not_measured(f"nnUNet {configuration} training", "it/s", why) for configuration in ("2d", "3d_fullres")]


def load_capacity() -> ModuleType | None:
    """deploy/capacity.py of this checkout (None where the package runs without its repository)."""
    path = REPO / "deploy" / "capacity.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("tanq_capacity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def capacity_figures(step_seconds: dict[str, float], translate_seconds: dict[str, float], card: str) -> list[Figure]:
    """Paper-configuration translator GPU-hours recomputed from the measured bf16 steps, beside the paper's 72."""
    capacity = load_capacity()
    if capacity is None or set(step_seconds) != {"tanq", "cyclegan"}:
        why = "deploy/capacity.py or a bf16 step time is missing"
        return [not_measured("translator GPU-hours, paper configuration", "GPU-h", why)]
    from tanq_ray.config import CONFIG_DIR, load_config

    figures = capacity.GpuFigures(card, datetime.date.today().isoformat(), step_seconds, translate_seconds)
    stages = {s.name: s for s in capacity.plan(load_config(CONFIG_DIR / "paper.yaml"), gpu=figures)}
    train, translate = stages["train TANQ + CycleGAN"], stages["translate"]
    return [
        Figure("translator GPU-hours, paper configuration", train.gpu_hours, "GPU-h", "paper, RTX 3090",
               PAPER_TRANSLATOR_GPU_HOURS, f"{train.work}; {train.unit_time} (bf16 autocast)"),
        Figure("translate GPU-hours, paper configuration", translate.gpu_hours, "GPU-h", note=translate.work),
    ]  # fmt: skip


def measure(quick: bool = False) -> list[Figure]:
    """Every figure of the module docstring; tiny sizes, on one CPU thread, when ``quick`` or without CUDA."""
    cuda = torch.cuda.is_available()
    threads = torch.get_num_threads()
    if quick or not cuda:
        torch.set_num_threads(1)  # a smoke test: one thread stays quick on a busy machine
    try:
        return _measure(TINY if quick or not cuda else PAPER, torch.device("cuda" if cuda else "cpu"))
    finally:
        torch.set_num_threads(threads)


def _measure(sizes: Sizes, device: torch.device) -> list[Figure]:
    """The figures in order: attention, translation, steps (compilation last), capacity, nnUNet."""
    started = time.perf_counter()
    cuda = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if cuda else "CPU"
    timer = Timer(device)
    print(f"[bench gpu] {card}, torch {torch.__version__}, {'tiny' if sizes is TINY else 'paper'} sizes", flush=True)
    memory = torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else math.nan
    note = f"torch {torch.__version__}; {'paper' if sizes is PAPER else 'tiny'} sizes"
    figures = [Figure(f"device: {card}", memory, "GiB", note=note)]
    figures += attention_figures(sizes, timer)
    translate = translate_figures(sizes, timer)
    figures += translate
    steps, bf16 = step_figures(sizes, timer, started)
    figures += steps
    per_slice = {f.name.split()[0]: f.value for f in translate if f.unit == "s/slice"}
    figures += capacity_figures(bf16, per_slice, card)
    figures += nnunet_figures()
    figures.append(Figure("benchmark wall time", time.perf_counter() - started, "s"))
    return figures
