"""Training: one loop for every task, checkpoints, schedules and multi-process data."""

from energy_transformer.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from energy_transformer.train.distributed import (
    EpochSampler,
    init_distributed,
    launched_world_size,
    make_loader,
    resolve_device,
    world,
)
from energy_transformer.train.ema import WeightEMA
from energy_transformer.train.schedule import warmup_cosine
from energy_transformer.train.trainer import (
    NO_PROGRESS,
    PRECISIONS,
    TrainConfig,
    Trainer,
    TrainResult,
    check_new_run,
    check_not_part_of_run,
    check_run_task,
    config_changes,
    describe_changes,
    load_run,
    read_run_config,
    run_weights,
    seed_everything,
    to_device,
)

__all__ = [
    "NO_PROGRESS",
    "PRECISIONS",
    "Checkpoint",
    "CheckpointError",
    "EpochSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WeightEMA",
    "check_new_run",
    "check_not_part_of_run",
    "check_run_task",
    "config_changes",
    "describe_changes",
    "init_distributed",
    "launched_world_size",
    "load_checkpoint",
    "load_run",
    "make_loader",
    "read_run_config",
    "resolve_device",
    "run_weights",
    "save_checkpoint",
    "seed_everything",
    "to_device",
    "warmup_cosine",
    "world",
]
