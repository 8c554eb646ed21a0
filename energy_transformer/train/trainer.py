"""One trainer for every task: AdamW, warm-up + cosine, clipping, checkpoints, exact resume, DDP."""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from energy_transformer.files import atomic_path, write_text_atomic
from energy_transformer.nn.checks import check_real
from energy_transformer.text import counted
from energy_transformer.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from energy_transformer.train.distributed import (
    EpochSampler,
    init_distributed,
    resolve_device,
    world,
)
from energy_transformer.train.ema import WeightEMA, check_ema_decay
from energy_transformer.train.schedule import warmup_cosine

PRECISIONS = ("float32", "bf16")
LossFn = Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module], dict[str, float]]


# What ``progress=False`` (``--no-progress``) silences, for every task's help.
NO_PROGRESS = "no progress bars and no per-epoch lines (metrics.csv records every epoch)"


@dataclass
class TrainConfig:
    """Optimisation settings; saved into ``config.json`` next to every checkpoint.

    ``warmup_epochs`` may be fractional; ``checkpoint_every`` (optimizer steps) adds mid-epoch
    checkpoints when the data come from :func:`~energy_transformer.train.make_loader`;
    ``patience`` stops after that many epochs without a better ``select`` metric.
    ``precision="bf16"`` runs each training step's forward and loss under bfloat16 autocast
    (weights, optimizer state and evaluation stay float32; bf16 needs no loss scaling).
    ``ema_decay`` evaluates, selects and saves an exponential moving average of the weights
    (:class:`~energy_transformer.train.ema.WeightEMA`) instead of the last ones; off by default.
    """

    epochs: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_epochs: float = 2.0
    min_lr: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    log_every: int = 10
    patience: int | None = None
    checkpoint_every: int | None = None
    precision: str = "float32"
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        check_real("lr", self.lr)
        check_real("weight_decay", self.weight_decay, allow_zero=True)
        check_real("warmup_epochs", self.warmup_epochs, allow_zero=True)
        check_real("min_lr", self.min_lr, allow_zero=True)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr, got {self.min_lr} > {self.lr}")
        if self.grad_clip is not None:
            check_real("grad_clip", self.grad_clip)
        check_ema_decay(self.ema_decay)
        self.betas = tuple(self.betas)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns. ``model`` holds the last weights; ``best_state`` the
    selected epoch's (the moving average's with ``ema_decay``), else the last (the final
    average); the other ``best_*`` are ``None`` when nothing was selected."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict[str, float] | None = None
    best_state: dict[str, Tensor] | None = None
    stopped_early: bool = False
    # Wall time of fit, summed over the sessions of a resumed run (up to its last checkpoint).
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors, (nested) tuples / lists / dicts of them, or objects with ``.to`` (PyG)."""
    if isinstance(batch, Tensor) or hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return int(getattr(batch, "num_graphs", 1))


def _state_on_cpu(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only; a model may exempt more (timm's `no_weight_decay` convention).
    exempt = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in exempt else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Trainer:
    """Trains any model given a loss function; every task uses this one loop.

    Args:
        model: the model; under ``torchrun`` it is wrapped in DistributedDataParallel, so
            ``loss_fn`` must call ``model(...)`` (its forward) for gradients to be synchronised.
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``; ``batch`` arrives on the device.
        config: :class:`TrainConfig`.
        run_dir: where ``config.json``, ``metrics.csv`` and checkpoints go (``None``: nowhere).
        task: task name recorded in ``config.json`` (``et eval`` dispatches on it).
        model_config: JSON-able keyword arguments that rebuild the model.
        extra_config: anything else worth recording (dataset, protocol, fold ...).
        may_change: entries of ``extra_config`` that a resume may change because training does
            not read them (e.g. how many test images a later evaluation scores).
        command: the command-line options the run was started with (``et train``'s), recorded
            for ``--resume`` to take the ones it is not given; not compared on resume.

    Files in ``run_dir``: ``config.json``; ``metrics.csv`` (and ``tensorboard/`` when
    tensorboard is installed); ``last.safetensors`` (weights, optimizer, RNG and
    progress, rewritten atomically each epoch and every ``checkpoint_every`` steps);
    ``best.safetensors`` (weights of the selected epoch). With ``ema_decay`` the weights
    evaluated, selected and saved as best are the moving average (``last.safetensors`` holds
    both), and a run without selection saves its final average as ``best.safetensors``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        config: TrainConfig,
        run_dir: str | os.PathLike | None = None,
        task: str = "custom",
        model_config: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
        may_change: Iterable[str] = (),
        command: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.distributed = init_distributed(self.device)
        self.rank, self.world_size = world()
        self.model = model.to(self.device)
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        self.loss_fn = loss_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.task = task
        self.model_config = model_config or {}
        self.extra_config = extra_config or {}
        self.may_change = (*_MAY_MOVE, *may_change)
        self.command = command
        self._tensorboard: Any = None  # SummaryWriter once opened; False when not installed
        self.optimizer = torch.optim.AdamW(
            _param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas
        )
        self.wrapped: nn.Module = model
        if self.distributed:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(model, device_ids=device_ids)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are evaluated and kept: the moving average if any, else the live."""
        return self.model if self.ema is None else self.ema.model

    def config_dict(self) -> dict[str, Any]:
        config = {
            "task": self.task,
            "model": self.model_config,
            "train": asdict(self.config),
            "extra": self.extra_config,
        }
        return config if self.command is None else {**config, "command": self.command}

    # -- files ------------------------------------------------------------------------------

    def _kept_checkpoint(self) -> str:
        """What a stopped run leaves to resume from, for its error message."""
        last = None if self.run_dir is None else self.run_dir / "last.safetensors"
        if last is not None and last.is_file():
            return f"{last} is kept (--resume continues from it)"
        return "no checkpoint was saved"

    def _say(self, line: str) -> None:
        """One line of news for the user (once under torchrun), between progress bars."""
        if self.is_main:
            tqdm.write(line)

    def _write_config(self) -> None:
        if self.run_dir is None or not self.is_main:
            return
        text = json.dumps(self.config_dict(), indent=2, default=str)
        write_text_atomic(self.run_dir / "config.json", text)

    def _write_metrics(self, history: list[dict[str, float]]) -> None:
        if self.run_dir is None or not self.is_main or not history:
            return
        keys = list(dict.fromkeys(k for row in history for k in row))
        with atomic_path(self.run_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        writer = self._tensorboard_writer()
        if writer:
            row = history[-1]
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, int(row["epoch"]))
            writer.flush()

    def _tensorboard_writer(self) -> Any:
        """A TensorBoard writer into ``run_dir/tensorboard`` when tensorboard is installed."""
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # not installed: metrics.csv is the log
                self._tensorboard = False
            else:
                self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._tensorboard

    def _save_last(self, progress: dict[str, Any]) -> None:
        if self.run_dir is None or not self.is_main:
            return
        save_checkpoint(
            self.run_dir / "last.safetensors",
            self.model.state_dict(),
            self.optimizer.state_dict(),
            meta=progress,
            rng=True,
            ema_state=None if self.ema is None else self.ema.state_dict(),
        )

    def _check_same_run(self) -> None:
        """Refuse to resume a run folder whose ``config.json`` records another model (its
        weights would not load, or into a model the user did not ask for), other data or
        settings in ``extra_config`` (it would go on training on other data, and its record
        would then describe data it was not trained on) or other training settings (the
        optimiser would switch mid-run, and the record would describe only the new ones). Where
        the data sit (``data``), the entries named in ``may_change``, the device and the logging
        may differ; epochs may grow (train further), not shrink."""
        if not (self.run_dir / "config.json").is_file():
            return
        saved = read_run_config(self.run_dir)[1]
        model = saved.get("model") or {}
        changed = config_changes(model, self.model_config) if model and self.model_config else []
        if changed:
            raise CheckpointError(
                f"{self.run_dir} holds a run of another model ({describe_changes(changed)}):"
                " resume it with the settings it was started with, or train into another folder"
            )
        extra = saved.get("extra") or {}
        keys = sorted((extra.keys() | self.extra_config.keys()) - set(self.may_change))
        changed = config_changes(extra, self.extra_config, keys)
        train = saved.get("train") or {}
        current = asdict(self.config)
        keys = sorted((train.keys() & current.keys()) - set(_MAY_DIFFER))
        if _min_lr_follows_lr(train, current):
            keys.remove("min_lr")
        changed += config_changes(train, current, keys)
        if train.get("epochs", 0) > self.config.epochs:
            changed.append(("epochs", train["epochs"], self.config.epochs))
        if changed:
            raise CheckpointError(
                f"{self.run_dir} holds a run on other data or settings"
                f" ({describe_changes(changed)}): resume it with the options it was started"
                " with, or train into another folder"
            )

    # -- loop -------------------------------------------------------------------------------

    def fit(
        self,
        train_data: Iterable,
        evaluate: EvalFn | None = None,
        select: str | None = None,
        mode: str = "max",
        resume: bool = False,
    ) -> TrainResult:
        """Train for ``config.epochs`` epochs over ``train_data`` (re-iterable, with ``len``).

        Args:
            train_data: a loader (ideally from :func:`make_loader`) or any re-iterable.
            evaluate: called after each epoch on the bare model in eval mode under no_grad;
                returns metrics (e.g. validation scores) recorded in the history.
            select: metric of ``evaluate`` to select the best epoch by; its weights are kept.
            mode: ``"max"`` or ``"min"`` for ``select``.
            resume: continue from ``run_dir/last.safetensors`` when present, exactly where it
                stopped (same weights as an uninterrupted run with the same seed).
        """
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if select is not None and evaluate is None:
            raise ValueError("select needs an evaluate function")
        cfg = self.config
        steps_per_epoch = len(train_data)  # type: ignore[arg-type]
        if steps_per_epoch == 0:
            raise ValueError("train_data is empty")
        total_steps = cfg.epochs * steps_per_epoch
        warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        min_ratio = cfg.min_lr / cfg.lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps, min_ratio)
        )
        sampler = getattr(train_data, "sampler", None)
        skippable = isinstance(sampler, EpochSampler)
        local_batch = getattr(train_data, "batch_size", None) or 1
        low_precision = cfg.precision == "bf16"

        result = TrainResult(model=self.model)
        fit_start = time.perf_counter()
        epoch, step_in_epoch, bad_epochs = 0, 0, 0
        best_value: float | None = None
        pending_rng = None  # mid-epoch checkpoint: RNG restored once the iterator exists
        epoch_sums: dict[str, float] = {}  # a resumed epoch's metric sums before the checkpoint
        epoch_seen = 0
        if self.run_dir is not None:
            check_new_run(self.run_dir, resume, self.task)
        if resume and self.run_dir is not None and (self.run_dir / "last.safetensors").is_file():
            self._check_same_run()
            try:
                ckpt = load_checkpoint(self.run_dir / "last.safetensors")
            except CheckpointError as err:
                best = self.run_dir / "best.safetensors"
                kept = f"; {best} is a separate file (et eval reads it)" if best.is_file() else ""
                raise CheckpointError(
                    f"{err}: cannot resume from it{kept}; to train again, move {self.run_dir}"
                    " aside and start a new run"
                ) from err
            try:
                self.model.load_state_dict(ckpt.model_state)
            except RuntimeError as err:  # a model_config does not name every size
                lines = str(err).strip().splitlines()  # a heading, then one line per mismatch
                detail = lines[min(1, len(lines) - 1)].strip()
                raise CheckpointError(
                    f"{self.run_dir / 'last.safetensors'} does not fit this model ({detail})"
                ) from err
            if self.ema is not None:
                if ckpt.ema_state is None:
                    raise CheckpointError(
                        f"{self.run_dir / 'last.safetensors'} holds no moving average of the"
                        " weights (ema_decay): cannot resume it with one"
                    )
                self.ema.load_state_dict(ckpt.ema_state)
            optim_state = ckpt.optimizer_state()
            if optim_state is None:
                raise CheckpointError("last.safetensors holds no optimizer state; cannot resume")
            self.optimizer.load_state_dict(optim_state)
            meta = ckpt.meta
            missing = [k for k in _RESUME_KEYS if k not in meta]
            if missing:
                raise CheckpointError(
                    f"{self.run_dir / 'last.safetensors'} cannot be resumed: its meta lacks"
                    f" {missing} (damaged, or not saved by the trainer)"
                )
            epoch, step_in_epoch = meta["epoch"], meta["step_in_epoch"]
            bad_epochs, best_value = meta["bad_epochs"], meta["best_value"]
            result.history = meta["history"]
            result.best_epoch, result.best_metrics = meta["best_epoch"], meta["best_metrics"]
            result.seconds = meta.get("seconds", 0.0)  # absent from older checkpoints
            scheduler.last_epoch = meta["global_step"]
            for group, lr in zip(self.optimizer.param_groups, meta["lrs"], strict=True):
                group["lr"] = lr
            if (self.run_dir / "best.safetensors").is_file():
                result.best_state = load_checkpoint(self.run_dir / "best.safetensors").model_state
            if step_in_epoch:
                pending_rng = ckpt
                # The epoch's metric sums so far (absent from older checkpoints: the epoch's
                # metrics then cover the steps after the resume only).
                epoch_sums = dict(meta.get("epoch_sums", {}))
                epoch_seen = int(meta.get("epoch_seen", 0))
            self._say(_resumed(self.run_dir, epoch, step_in_epoch, steps_per_epoch, cfg.epochs))
        elif resume and self.run_dir is not None:
            self._say(f"{self.run_dir}: no checkpoint to resume, training from the start")
        self._write_config()

        self.wrapped.train()
        while epoch < cfg.epochs:
            seed_everything(cfg.seed + 9973 * epoch + self.rank)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            if skippable and step_in_epoch:
                sampler.skip(step_in_epoch * local_batch)
            sums, seen, seen_before = epoch_sums, epoch_seen, epoch_seen
            epoch_sums, epoch_seen = {}, 0
            start = time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                initial=step_in_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not (cfg.progress and self.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            batches = iter(train_data)
            if pending_rng is not None:
                # After iter(): a DataLoader draws a seed from the global RNG when it starts.
                pending_rng.restore_rng()
                pending_rng = None
            try:
                for batch in batches:
                    batch = to_device(batch, self.device)
                    with torch.autocast(self.device.type, torch.bfloat16, enabled=low_precision):
                        loss, logs = self.loss_fn(self.wrapped, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"training diverged: the loss is {loss.item()} at epoch {epoch + 1},"
                            f" step {step_in_epoch + 1} (try a lower lr or gradient clipping);"
                            f" {self._kept_checkpoint()}"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    scheduler.step()
                    if self.ema is not None:
                        self.ema.update(scheduler.last_epoch)
                    step_in_epoch += 1
                    n = _batch_size(batch) * self.world_size
                    seen += n
                    for k, v in {"loss": loss.item(), **logs}.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * n
                    bar.update(1)
                    if step_in_epoch % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                        rate = (seen - seen_before) / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", per_s=f"{rate:.0f}")
                    if (
                        skippable
                        and cfg.checkpoint_every
                        and step_in_epoch % cfg.checkpoint_every == 0
                        and step_in_epoch < steps_per_epoch
                    ):
                        progress = self._progress(
                            epoch,
                            step_in_epoch,
                            scheduler,
                            result,
                            bad_epochs,
                            best_value,
                            fit_start,
                        )
                        # The epoch's metrics so far, so that a resumed epoch reports them all.
                        progress |= {"epoch_sums": sums, "epoch_seen": seen}
                        self._save_last(progress)
            finally:
                bar.close()
            seconds = time.perf_counter() - start
            row: dict[str, float] = {"epoch": epoch + 1}
            row.update({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["seconds"] = seconds
            row["samples_per_s"] = (seen - seen_before) / max(seconds, 1e-9)
            if evaluate is not None:
                row.update(self._evaluate(evaluate))
            epoch += 1
            step_in_epoch = 0
            if select is not None:
                if select not in row:
                    raise KeyError(f"evaluate() returned no {select!r} (got {sorted(row)})")
                value = row[select]
                better = best_value is None or (
                    value > best_value if mode == "max" else value < best_value
                )
                if better:
                    best_value, bad_epochs = value, 0
                    result.best_epoch, result.best_metrics = epoch, dict(row)
                    result.best_state = _state_on_cpu(self.evaluated)
                    if self.run_dir is not None and self.is_main:
                        save_checkpoint(
                            self.run_dir / "best.safetensors",
                            result.best_state,
                            meta={"epoch": epoch, "metrics": row},
                        )
                else:
                    bad_epochs += 1
            result.history.append(row)
            self._write_metrics(result.history)
            progress = self._progress(
                epoch, 0, scheduler, result, bad_epochs, best_value, fit_start
            )
            self._save_last(progress)
            if self.is_main and cfg.progress:
                shown = {k: v for k, v in row.items() if k not in ("epoch", "seconds")}
                tqdm.write(
                    f"epoch {epoch}/{cfg.epochs} "
                    + " ".join(f"{k}={v:.4g}" for k, v in shown.items())
                    + f" ({seconds:.1f}s)"
                )
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                result.stopped_early = True
                break
        if select is None and self.ema is not None:
            # The average is the model to use; best.safetensors is what et eval reads.
            result.best_state = _state_on_cpu(self.ema.model)
            if self.run_dir is not None and self.is_main:
                save_checkpoint(
                    self.run_dir / "best.safetensors",
                    result.best_state,
                    meta={"epoch": epoch, "ema_decay": cfg.ema_decay},
                )
        if result.best_state is None:
            result.best_state = _state_on_cpu(self.model)
        result.seconds += time.perf_counter() - fit_start
        return result

    def _evaluate(self, evaluate: EvalFn) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.is_main:
            model = self.evaluated
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in evaluate(model).items()}
            self.model.train()
        if self.distributed:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        return metrics

    def _progress(
        self,
        epoch: int,
        step_in_epoch: int,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        result: TrainResult,
        bad_epochs: int,
        best_value: float | None,
        fit_start: float,
    ) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": scheduler.last_epoch,
            "lrs": [g["lr"] for g in self.optimizer.param_groups],
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_metrics": result.best_metrics,
            "best_value": best_value,
            "bad_epochs": bad_epochs,
            "seconds": result.seconds + time.perf_counter() - fit_start,
        }


def config_changes(
    saved: dict[str, Any], current: dict[str, Any], keys: Iterable[str] | None = None
) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each of ``keys`` (default: all) that differs,
    ``current`` taken through JSON as ``config.json`` stores it (tuples become lists). Where both
    values are dicts, their own entries that differ, as ``key.entry``."""
    current = json.loads(json.dumps(current, default=str))
    keys = sorted(saved.keys() | current.keys()) if keys is None else keys
    changed = []
    for k in keys:
        before, now = saved.get(k), current.get(k)
        if isinstance(before, dict) and isinstance(now, dict):
            changed += [(f"{k}.{sub}", a, b) for sub, a, b in config_changes(before, now)]
        elif before != now:
            changed.append((k, before, now))
    return changed


def _min_lr_follows_lr(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether ``min_lr`` changed only in step with ``lr`` (the same ``min_lr / lr``), as one
    derived from ``lr`` does (the anomaly harness's constant rate, ``min_lr = lr``): the change
    is then the ``lr`` the user gave, and a refusal names that alone."""
    lr, min_lr = saved.get("lr"), saved.get("min_lr")
    if lr is None or min_lr is None or lr == current["lr"]:
        return False
    return min_lr * current["lr"] == current["min_lr"] * lr


def _resumed(run_dir: Path, epoch: int, step: int, steps_per_epoch: int, epochs: int) -> str:
    """What a resume found: where it continues, or that the run is complete."""
    if epoch >= epochs:
        return (
            f"{run_dir}: already trained for {counted(epoch, 'epoch')}, nothing to do"
            " (a larger --epochs trains further)"
        )
    at = f"epoch {epoch + 1}/{epochs}"
    if step:
        at += f", step {step + 1}/{steps_per_epoch}"
    return f"{run_dir}: resuming at {at}"


def describe_changes(changed: list[tuple[str, Any, Any]]) -> str:
    """``config_changes`` as ``"key saved -> current, ..."`` for a message."""
    return ", ".join(f"{k} {before!r} -> {now!r}" for k, before, now in changed)


# What the trainer's last.safetensors records to resume from.
_RESUME_KEYS = (
    "epoch", "step_in_epoch", "bad_epochs", "best_value", "history", "best_epoch",
    "best_metrics", "global_step", "lrs",
)  # fmt: skip

# Entries of a run's extra_config that a resume may change: where the data sit on this machine.
_MAY_MOVE = ("data",)
# TrainConfig fields a resume may change: none alters the numbers (epochs: checked to grow).
_MAY_DIFFER = ("device", "progress", "log_every", "checkpoint_every", "epochs")

# What a finished (or partly finished) run leaves: weights, a fold's result, a run's results.
_RUN_OUTPUTS = ("*.safetensors", "result.json", "results.json")


_CONTINUE = (
    "continue it with --resume, or train into another folder (delete this one to start over)"
)


def check_new_run(
    run_dir: str | os.PathLike,
    resume: bool,
    task: str | None = None,
    remedy: str = _CONTINUE,
) -> None:
    """Refuse to train into ``run_dir`` when it holds a run (``config.json`` and weights or
    results, its own or its folds' or seeds') and ``resume`` is off: a second run would
    overwrite the first one's weights, metrics and configuration. Results count too: a
    weight-free model (WL kernel, random forest) leaves only them. A folder whose run stopped
    before saving either (a bad option, say) is not one. ``remedy`` ends the message.

    With ``task``, resuming a run of another task (or a folder whose ``config.json`` names no
    task) is refused too: it would rewrite that run's ``config.json`` and leave it unreadable
    by its own task."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        return
    if resume:
        if task is None:
            return
        found = read_run_config(run_dir)[1].get("task")
        if found is None:
            raise FileExistsError(
                f"{run_dir / 'config.json'} records no task: not a run of et train, so --resume"
                " cannot continue it"
            )
        if found != task:
            raise FileExistsError(
                f"{run_dir} holds a run of task {found!r}, not {task!r}: --resume cannot"
                " continue it; train into another folder"
            )
        return
    if any(next(run_dir.rglob(pattern), None) is not None for pattern in _RUN_OUTPUTS):
        raise FileExistsError(f"{run_dir} already holds a trained run: {remedy}")


def check_not_part_of_run(run_dir: str | os.PathLike, task: str) -> None:
    """Refuse ``run_dir`` when it is a part (a fold's or a seed's folder) of a ``task`` run one
    or two levels up: training the whole task into it would overwrite that part's
    ``config.json`` with the whole run's."""
    run_dir = Path(run_dir).resolve()
    for above in (run_dir.parent, run_dir.parent.parent):
        if not (above / "config.json").is_file():
            continue
        try:
            found = read_run_config(above)[1].get("task")
        except ValueError:  # not a run configuration: nothing of ours to protect
            continue
        if found == task:
            raise FileExistsError(
                f"{run_dir} is part (a fold or seed) of the {task} run in {above}: give"
                f" {above} as --out to continue that run"
            )


def read_run_config(run: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The folder and parsed ``config.json`` of a run folder, or of the one that holds the
    checkpoint file ``run``; a clear ``FileNotFoundError`` / ``ValueError`` otherwise."""
    run = Path(run)
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist: give a run folder written by et train")
    folder = run if run.is_dir() else run.parent
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: is {run} a run folder of et train?")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a run configuration (a JSON object)")
    return folder, config


def load_run(
    run: str | os.PathLike, task: str | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Weights and ``config.json`` of a run folder (best weights if selected, else last).

    ``run`` may also be a checkpoint file inside a run folder. With ``task``, a run of another
    task is refused before its weights are looked for.
    """
    run = Path(run)
    _, config = read_run_config(run)
    check_run_task(run, config, task)
    return load_checkpoint(run_weights(run)).model_state, config


def check_run_task(run: Path, config: dict[str, Any], task: str | None) -> None:
    """Refuse a run of another task than ``task`` (any task when None)."""
    if task is not None and config.get("task") != task:
        raise ValueError(
            f"{run} holds a run of task {config.get('task')!r}; this command needs task {task!r}"
        )


def run_weights(run: str | os.PathLike) -> Path:
    """The checkpoint :func:`load_run` reads: the file itself, else the folder's best weights
    (an epoch was selected, or a run with ``ema_decay`` ended), else its last."""
    run = Path(run)
    if run.is_file():
        return run
    best = run / "best.safetensors"
    return best if best.is_file() else run / "last.safetensors"
