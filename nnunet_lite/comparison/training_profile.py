"""``nnunet_lite profile --training``: where one nnU-Net training iteration spends its time.

The trainer is nnU-Net's own object, built and started the way ``nnUNetv2_train`` does it (``on_train_start``:
network, optimizer, loss, data augmentation workers), with its output folder redirected to a temporary one so that
nothing lands in ``nnUNet_results``. Per iteration it measures:

- data wait: how long ``next(dataloader_train)`` blocks (the augmentation workers' lag behind the network);
- the training step: nnU-Net's ``train_step`` on that batch (headline figure, its median);
- forward (network + loss), backward and optimizer (gradient clipping + step) on a second batch, with the same
  operations as ``train_step`` in the same order, each phase synchronised (the breakdown; its sum is close to the step);
- the top operators of one ``train_step`` from ``torch.profiler`` (self time).

Achieved GMAC/s counts a training step as three forward passes (forward, and a backward that costs about twice the
forward: gradients of inputs and of weights): ``3 x forward MACs per patch x batch / step seconds``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..profiling import count_flops, count_parameters
from .nnunet_io import ComparisonError, dataset_name, find_trainer_class, load_plans, markdown_table, quiet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _autocast(trainer) -> contextlib.AbstractContextManager:
    """The autocast ``train_step`` uses: nnU-Net's on CUDA, a trainer's own where it defines one (bf16 variants)."""
    own = getattr(trainer, "training_autocast", None)
    if own is not None:
        with own():
            yield
    elif trainer.device.type == "cuda":
        with torch.autocast("cuda", enabled=True):
            yield
    else:
        yield


def _phases(trainer, batch: dict) -> dict[str, float]:
    """Seconds of forward (network + loss), backward and optimizer for one batch, as ``train_step`` runs them."""
    device = trainer.device
    data = batch["data"].to(device, non_blocking=True)
    target = batch["target"]
    target = [t.to(device, non_blocking=True) for t in target] if isinstance(target, list) else target.to(device)
    trainer.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    start = time.perf_counter()
    with _autocast(trainer):
        loss = trainer.loss(trainer.network(data), target)
    _sync(device)
    forward_end = time.perf_counter()
    scaler = trainer.grad_scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    _sync(device)
    backward_end = time.perf_counter()
    if scaler is not None:
        scaler.unscale_(trainer.optimizer)
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
    if scaler is not None:
        scaler.step(trainer.optimizer)
        scaler.update()
    else:
        trainer.optimizer.step()
    _sync(device)
    end = time.perf_counter()
    return {"forward": forward_end - start, "backward": backward_end - forward_end, "optimizer": end - backward_end}


def _top_operators(trainer, batch: dict, top: int) -> list[dict]:
    """The ``top`` operators of one ``train_step`` by self time (CPU, or CUDA kernels on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        trainer.train_step(batch)
        _sync(trainer.device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0 and not e.key.startswith("ProfilerStep")]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {"operator": e.key, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total, "calls": e.count}
        for e in events[:top]
    ]


def _make_trainer(trainer_name: str, dataset: str, configuration: str, plans_name: str, fold: int, device, folder):
    """The trainer as ``nnUNetv2_train`` builds it, with ``nnUNet_results`` pointing at ``folder`` meanwhile: nnU-Net
    reads its path variables at each use, so its log and logger land there, never among the user's results."""
    from nnunetv2.run.run_training import get_trainer_from_args

    find_trainer_class(trainer_name)  # a clear error for an unknown name
    plans, _, _ = load_plans(dataset, plans_name)
    if configuration not in plans["configurations"]:
        raise ComparisonError(
            f"configuration {configuration!r} is not in {plans_name} of {dataset} "
            f"(has: {sorted(plans['configurations'])})"
        )
    previous = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = str(folder)
    try:
        with quiet():
            return get_trainer_from_args(dataset, configuration, fold, trainer_name, plans_name, device=device)
    finally:
        if previous is None:
            os.environ.pop("nnUNet_results")
        else:
            os.environ["nnUNet_results"] = previous


def profile_training(
    trainer_name: str,
    dataset: str | int,
    configuration: str = "2d",
    plans_name: str = "nnUNetPlans",
    fold: int = 0,
    device: str = "cpu",
    iterations: int = 5,
    warmup: int = 2,
    top: int = 10,
    threads: int | None = None,
) -> dict:
    """Per-iteration timings of ``trainer_name``'s training at the plans' batch size and patch size (module docstring).

    Args:
        trainer_name: any trainer class nnU-Net can find (nnU-Net's own included).
        dataset: dataset ID or name; its preprocessed data must exist (``nnUNetv2_plan_and_preprocess``).
        configuration, plans_name, fold: as for ``nnUNetv2_train``.
        device: "cpu" or "cuda".
        iterations: timed iterations (medians are reported); warmup: untimed iterations first.
        top: operators listed from ``torch.profiler``.
        threads: intra-op CPU threads (default: torch's).
    """
    if iterations < 1 or warmup < 0 or top < 0:
        raise ComparisonError(f"--iterations must be >= 1 and --warmup, --top >= 0 (got {iterations}, {warmup}, {top})")
    name = dataset_name(dataset)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ComparisonError("--device cuda: no CUDA device is visible (use --device cpu)")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="nnunet_lite_profile_training_") as tmp:
        trainer = _make_trainer(trainer_name, name, configuration, plans_name, fold, device, Path(tmp))
        try:
            with quiet():
                trainer.on_train_start()
                trainer.on_train_epoch_start()
            loader = trainer.dataloader_train
            waits, steps, phases = [], [], []
            for i in range(warmup + iterations):
                start = time.perf_counter()
                batch = next(loader)
                wait = time.perf_counter() - start
                _sync(device)
                start = time.perf_counter()
                trainer.train_step(batch)
                _sync(device)
                step = time.perf_counter() - start
                breakdown = _phases(trainer, next(loader))
                if i >= warmup:
                    waits.append(wait)
                    steps.append(step)
                    phases.append(breakdown)
            operators = _top_operators(trainer, next(loader), top) if top else []
            network = trainer.network
            network = getattr(network, "_orig_mod", network)  # torch.compile'd
            patch = list(trainer.configuration_manager.patch_size)
            macs = count_flops(network, [1, trainer.num_input_channels, *patch]) / 2
            batch_size = int(trainer.batch_size)
            result = {
                "trainer": trainer_name,
                "dataset": name,
                "configuration": configuration,
                "plans": plans_name,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "augmentation_workers": _workers(loader),
                "network": type(network).__name__,
                "params": count_parameters(network),
                "batch_size": batch_size,
                "patch_size": patch,
                "forward_macs_per_patch": macs,
                "iterations": iterations,
                "data_wait_s": statistics.median(waits),
                "step_s": statistics.median(steps),
                **{f"{k}_s": statistics.median(p[k] for p in phases) for k in ("forward", "backward", "optimizer")},
                "top_operators": operators,
            }
        finally:
            _finish(trainer)
            torch.set_num_threads(previous_threads)
    iteration = result["step_s"] + result["data_wait_s"]
    result["samples_per_s"] = batch_size / iteration
    result["gmacs_per_s"] = 3 * macs * batch_size / result["step_s"] / 1e9
    return result


def _workers(loader) -> int:
    return int(getattr(loader, "num_processes", 0))


def _finish(trainer) -> None:
    """Stops the augmentation workers (nnU-Net's ``on_train_end`` would also write a final checkpoint)."""
    for loader in (getattr(trainer, "dataloader_train", None), getattr(trainer, "dataloader_val", None)):
        if loader is not None and hasattr(loader, "_finish"):
            with quiet():
                loader._finish()


def format_training_profiles(profiles: list[dict]) -> str:
    """One row per trainer; the first trainer is the reference of the ratio column."""
    reference = profiles[0]
    header = [
        "trainer",
        "params",
        "batch x patch",
        "data wait ms",
        "forward ms",
        "backward ms",
        "optimizer ms",
        "train_step ms",
        "samples/s",
        "GMAC/s",
        f"step vs {reference['trainer']}",
    ]
    rows = [
        [
            p["trainer"],
            f"{p['params']:,}",
            f"{p['batch_size']} x {'x'.join(map(str, p['patch_size']))}",
            f"{1e3 * p['data_wait_s']:.0f}",
            f"{1e3 * p['forward_s']:.0f}",
            f"{1e3 * p['backward_s']:.0f}",
            f"{1e3 * p['optimizer_s']:.0f}",
            f"{1e3 * p['step_s']:,.0f}",
            f"{p['samples_per_s']:.1f}",
            f"{p['gmacs_per_s']:.1f}",
            f"{reference['step_s'] / p['step_s']:.2f}x",
        ]
        for p in profiles
    ]
    first = profiles[0]
    lines = [
        markdown_table(header, rows),
        "",
        f"Medians of {first['iterations']} iterations on {first['device']} ({first['threads']} threads, "
        f"{first['augmentation_workers']} augmentation workers): train_step is nnU-Net's own; forward "
        "(network + loss), backward and optimizer (clipping + step) are the same operations timed phase by phase on "
        "another batch; data wait is how long the next batch kept the network waiting. "
        "GMAC/s = 3 x forward MACs x batch / step.",
    ]
    for p in profiles:
        if p["top_operators"]:
            ops = [
                [o["operator"], f"{o['self_ms']:.1f}", f"{100 * o['share']:.1f} %", o["calls"]]
                for o in p["top_operators"]
            ]
            lines += ["", f"Top operators of one train_step of {p['trainer']} (torch.profiler, self time):", ""]
            lines += [markdown_table(["operator", "self ms", "share", "calls"], ops)]
    return "\n".join(lines)
