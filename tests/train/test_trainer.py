import csv
import json
import random
import re
import sys
import time
import types

import numpy as np
import pytest
import torch
from torch import nn
from toy import killed_at_evaluation, mse_loss, toy_config, toy_dataset, toy_model

from energy_transformer.train import (
    CheckpointError,
    EpochSampler,
    TrainConfig,
    Trainer,
    check_new_run,
    load_checkpoint,
    load_run,
    make_loader,
    save_checkpoint,
    warmup_cosine,
)
from energy_transformer.train import distributed as dist_mod


def _fit(run_dir, loss_fn=mse_loss, resume=False, **kw):
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer = Trainer(toy_model(dropout=0.3), loss_fn, toy_config(**kw), run_dir, task="toy")
    return trainer, trainer.fit(loader, resume=resume)


def test_warmup_cosine_values():
    assert warmup_cosine(0, 10, 4) == pytest.approx(0.25)
    assert warmup_cosine(3, 10, 4) == pytest.approx(1.0)
    assert warmup_cosine(4, 10, 4) == pytest.approx(1.0)
    assert warmup_cosine(7, 10, 4) == pytest.approx(0.5)  # halfway through the cosine
    assert warmup_cosine(10, 10, 4, min_ratio=0.1) == pytest.approx(0.1)


def test_resume_after_crash_mid_epoch_is_exact(tmp_path):
    _, full = _fit(tmp_path / "full", checkpoint_every=2)

    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 1:  # a slow first session: its time must count in the resumed run's
            time.sleep(1.5)
        if calls["n"] == 8:  # epoch 2, step 3: after the step-2 checkpoint of that epoch
            raise RuntimeError("simulated kill")
        return mse_loss(model, batch)

    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(tmp_path / "cut", loss_fn=crashing, checkpoint_every=2)
    meta = load_checkpoint(tmp_path / "cut" / "last.safetensors").meta
    assert meta["step_in_epoch"] == 2 and meta["seconds"] >= 1.5
    _, resumed = _fit(tmp_path / "cut", resume=True, checkpoint_every=2)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.seconds > meta["seconds"] and full.seconds < 1.5


def test_resume_at_epoch_boundary_continues_the_schedule(tmp_path):
    _, full = _fit(tmp_path / "full", epochs=4)
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    config = toy_config(epochs=4)
    trainer = Trainer(toy_model(dropout=0.3), mse_loss, config, tmp_path / "half", task="toy")
    with pytest.raises(RuntimeError, match="simulated kill during evaluation of epoch 3"):
        trainer.fit(loader, evaluate=killed_at_evaluation(3))
    assert load_checkpoint(tmp_path / "half" / "last.safetensors").meta["epoch"] == 2
    _, resumed = _fit(tmp_path / "half", epochs=4, resume=True)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_selection_patience_and_files(tmp_path):
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer = Trainer(
        toy_model(),
        mse_loss,
        toy_config(epochs=6, patience=2),
        tmp_path,
        task="toy",
        model_config={"dim": 6},
    )
    result = trainer.fit(loader, evaluate=lambda m: {"val": next(scores)}, select="val")
    assert result.best_epoch == 2 and result.stopped_early and len(result.history) == 4
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == "toy" and config["model"] == {"dim": 6}
    assert config["train"]["patience"] == 2
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and "val" in rows[0] and "train_loss" in rows[0]
    state, _ = load_run(tmp_path)
    for k, v in result.best_state.items():
        assert torch.equal(state[k], v)


def test_nan_loss_is_an_error_not_silent(tmp_path):
    def nan_loss(model, batch):
        loss, logs = mse_loss(model, batch)
        return loss * float("nan"), logs

    with pytest.raises(FloatingPointError, match="diverged: the loss is nan .* no checkpoint was"):
        _fit(tmp_path, loss_fn=nan_loss)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = toy_model()
    opt = torch.optim.AdamW(model.parameters())
    mse_loss(model, toy_dataset()[:4])[0].backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "c.safetensors", model.state_dict(), opt.state_dict(), meta={"epoch": 3}
    )
    ckpt = load_checkpoint(path)
    assert ckpt.meta == {"epoch": 3}
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model_state[k], v)
    restored = torch.optim.AdamW(toy_model().parameters())
    restored.load_state_dict(ckpt.optimizer_state())
    assert torch.equal(
        restored.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )

    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "cut.safetensors")
    # One byte flipped in the last tensor's data (the end of the file) or in the metadata: the
    # layout still parses, so only the checksum can tell.
    flipped = bytearray(data)
    flipped[-1] ^= 0x01
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(tmp_path / "flipped.safetensors")
    edited = data.replace(b'{\\"epoch\\": 3}', b'{\\"epoch\\": 4}')
    assert edited != data and len(edited) == len(data)
    (tmp_path / "edited.safetensors").write_bytes(edited)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(tmp_path / "edited.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not an energy-transformer checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    ours = {"format": "energy-transformer/1"}
    for metadata, message in [
        ({**ours, "meta": "{not json"}, "damaged metadata"),
        ({**ours, "meta": "[1, 2]"}, "its meta is not a JSON object"),
        ({**ours, "optim_groups": "[]"}, "damaged metadata"),  # with a damaged optim/x/ key
    ]:
        tensors = {"model/w": torch.zeros(2), "optim/x/step": torch.zeros(())}
        save_file(tensors, tmp_path / "damaged.safetensors", metadata=metadata)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "damaged.safetensors")


def test_what_a_checkpoint_cannot_hold_is_named(tmp_path):
    model = toy_model()
    with pytest.raises(ValueError, match="meta must be JSON-serialisable"):
        save_checkpoint(tmp_path / "c.safetensors", model.state_dict(), meta={"p": tmp_path})
    lbfgs = torch.optim.LBFGS(model.parameters())

    def closure():
        lbfgs.zero_grad()
        loss = mse_loss(model, toy_dataset()[:4])[0]
        loss.backward()
        return loss

    lbfgs.step(closure)  # its state holds lists, which a safetensors file cannot
    with pytest.raises(ValueError, match="cannot be stored as a tensor"):
        save_checkpoint(tmp_path / "c.safetensors", model.state_dict(), lbfgs.state_dict())
    assert not (tmp_path / "c.safetensors").exists()


def test_a_checkpoint_without_resume_information_is_a_clear_error(tmp_path):
    _fit(tmp_path, epochs=1)
    ckpt = load_checkpoint(tmp_path / "last.safetensors")
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, ckpt.model_state, ckpt.optimizer_state(), meta={"dpoch": 1})
    with pytest.raises(CheckpointError, match="cannot be resumed: its meta lacks"):
        _fit(tmp_path, epochs=2, resume=True)


def test_epoch_sampler_shards_are_the_global_batches(monkeypatch):
    single = EpochSampler(20, seed=5)
    single.set_epoch(2)
    global_order = list(single)
    shards = []
    for rank in range(2):
        monkeypatch.setattr(dist_mod, "world", lambda r=rank: (r, 2))
        s = EpochSampler(20, seed=5)
        s.set_epoch(2)
        shards.append(list(s))
    for step in range(2):  # global batch 8 = two local batches of 4
        local = shards[0][step * 4 : (step + 1) * 4] + shards[1][step * 4 : (step + 1) * 4]
        assert sorted(local) == sorted(global_order[step * 8 : (step + 1) * 8])
    monkeypatch.setattr(dist_mod, "world", lambda: (0, 1))
    s = EpochSampler(20, seed=5)
    s.set_epoch(2)
    s.skip(6)
    assert list(s) == global_order[6:]


def test_empty_dataset_and_bad_config():
    with pytest.raises(ValueError, match="empty"):
        EpochSampler(0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)


def test_bf16_precision_autocasts_the_training_step_only():
    seen = []

    def loss_fn(model, batch):
        x, y = batch
        out = model(x)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        loss = nn.functional.mse_loss(out.float(), y)
        return loss, {}

    def fit(precision):
        torch.manual_seed(0)
        trainer = Trainer(toy_model(), loss_fn, toy_config(epochs=8, precision=precision))
        loader = make_loader(toy_dataset(), batch_size=8, seed=1)
        return trainer.fit(loader, evaluate=lambda m: {"w": m[0].weight.dtype.itemsize})

    low, full = fit("bf16"), fit("float32")
    assert set(seen) == {(True, torch.bfloat16), (False, torch.float32)}
    assert all(p.dtype == torch.float32 for p in low.model.parameters())
    assert low.history[-1]["w"] == 4  # evaluation sees float32 weights
    first, last = low.history[0]["train_loss"], low.history[-1]["train_loss"]
    assert last < 0.5 * first  # it learns
    assert last == pytest.approx(full.history[-1]["train_loss"], rel=0.1)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


class _FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is not a dependency)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.flushes = log_dir, [], 0
        _FakeWriter.opened.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1


def test_tensorboard_gets_each_epochs_metrics_when_installed(tmp_path, monkeypatch):
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = _FakeWriter
    _FakeWriter.opened = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    _fit(tmp_path, epochs=2)
    (writer,) = _FakeWriter.opened
    assert writer.log_dir == str(tmp_path / "tensorboard") and writer.flushes == 2
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    expected = [
        (k, float(v), int(row["epoch"])) for row in rows for k, v in row.items() if k != "epoch"
    ]
    assert writer.scalars == expected  # csv keeps repr(float): exact
    # Not installed: metrics.csv is the log, and nothing else is written.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _fit(tmp_path / "plain", epochs=1)
    assert not (tmp_path / "plain" / "tensorboard").exists()
    assert (tmp_path / "plain" / "metrics.csv").is_file()


def test_resume_refuses_a_run_of_another_model(tmp_path):
    def trainer(width: int, model_config: dict | None) -> Trainer:
        model = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 1))
        return Trainer(model, mse_loss, toy_config(epochs=1), tmp_path, model_config=model_config)

    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer(16, {"width": 16}).fit(loader)
    with pytest.raises(CheckpointError, match="holds a run of another model \\(width 16 -> 8\\)"):
        trainer(8, {"width": 8}).fit(loader, resume=True)
    # Without a recorded model configuration the weights themselves must not fit quietly.
    with pytest.raises(CheckpointError, match="last.safetensors does not fit this model"):
        trainer(8, None).fit(loader, resume=True)
    # The same model resumes (here: nothing left to do after its one epoch).
    assert trainer(16, {"width": 16}).fit(loader, resume=True).history[0]["epoch"] == 1


def test_resume_refuses_other_data_or_seed_but_not_a_moved_data_folder(tmp_path):
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    extra = {"dataset": "toy", "data": "/old/place", "train_ratio": 0.4}

    def fit(epochs=1, seed=1, **changes):
        config = toy_config(epochs=epochs, seed=seed)
        trainer = Trainer(toy_model(), mse_loss, config, tmp_path, extra_config=extra | changes)
        return trainer.fit(loader, resume=True)

    fit()
    before = (tmp_path / "last.safetensors").read_bytes()
    for changes, message in [
        ({"train_ratio": 0.01}, "train_ratio 0.4 -> 0.01"),
        ({"dataset": "other"}, "dataset 'toy' -> 'other'"),
        ({"split": "file"}, "split None -> 'file'"),
        ({"seed": 2}, "seed 1 -> 2"),
    ]:
        with pytest.raises(CheckpointError, match=f"other data or settings \\({message}\\)"):
            fit(**changes)
    assert (tmp_path / "last.safetensors").read_bytes() == before
    # Where the data sit may change between machines, and a run may be given more epochs.
    assert len(fit(epochs=2, data="/new/place").history) == 2


def test_a_second_run_into_a_trained_folder_is_refused(tmp_path):
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    config = toy_config(epochs=1)
    Trainer(toy_model(), mse_loss, config, tmp_path).fit(loader)
    before = (tmp_path / "last.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a trained run: continue it with"):
        Trainer(toy_model(seed=1), mse_loss, config, tmp_path).fit(loader)
    assert (tmp_path / "last.safetensors").read_bytes() == before  # nothing was overwritten
    # A run that stopped before saving weights (here: only its config) is no run to protect.
    check_new_run(tmp_path / "empty", resume=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    check_new_run(tmp_path / "empty", resume=False)
    check_new_run(tmp_path, resume=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_decay": -1.0}, "weight_decay must be finite and >= 0, got -1.0"),
        ({"weight_decay": float("nan")}, "weight_decay must be finite and >= 0, got nan"),
        ({"warmup_epochs": -1.0}, "warmup_epochs must be finite and >= 0, got -1.0"),
        ({"warmup_epochs": float("nan")}, "warmup_epochs must be finite and >= 0, got nan"),
        ({"min_lr": 1.0, "lr": 0.1}, "min_lr must be <= lr, got 1.0 > 0.1"),
        ({"lr": float("inf")}, "lr must be finite and > 0, got inf"),
        ({"grad_clip": float("nan")}, "grad_clip must be finite and > 0, got nan"),
    ],
)
def test_bad_optimisation_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy_config(**kwargs)


def _fit_recording_steps(loss_fn=mse_loss, **kw):
    """Fit on 32 toy samples in batches of 8 (4 steps an epoch), recording at every
    ``optimizer.step`` (a pre-hook: after backward and clipping, before the update) the lr
    it is about to use and the total gradient norm it is about to apply."""
    loader = make_loader(toy_dataset(n=32), batch_size=8, seed=1)
    trainer = Trainer(toy_model(), loss_fn, toy_config(**kw))
    lrs, norms = [], []

    def record(optimizer, args, kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit(loader)
    return lrs, norms


@pytest.mark.parametrize("warmup_epochs", [1, 0.5])
def test_the_trainer_follows_the_schedule_step_by_step(warmup_epochs):
    # 3 epochs x 4 steps; warm-up counted in optimizer steps (1 epoch = 4, 0.5 = 2), then a
    # cosine down towards min_lr = 0.1 * lr. The scheduler steps after optimizer.step, so the
    # lr that step s (0-based) uses is lr * warmup_cosine(s, ...).
    lr, min_lr = 1e-2, 1e-3
    lrs, _ = _fit_recording_steps(epochs=3, lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs)
    warmup = round(warmup_epochs * 4)
    expected = [lr * warmup_cosine(s, 12, warmup, min_lr / lr) for s in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)
    assert lrs[warmup - 1] == pytest.approx(lr)  # the peak ends the warm-up
    assert lrs[-1] > min_lr  # never below the floor (reached only after the last step)


def test_gradients_are_clipped_to_grad_clip_before_each_step():
    def huge_loss(model, batch):
        loss, logs = mse_loss(model, batch)
        return loss * 1e6, logs

    _, clipped = _fit_recording_steps(huge_loss, epochs=1, grad_clip=0.5)
    _, free = _fit_recording_steps(huge_loss, epochs=1, grad_clip=None)
    assert len(clipped) == len(free) == 4
    # clip_grad_norm_ scales by clip / (norm + 1e-6): the clip, up to float32 rounding.
    assert clipped == pytest.approx([0.5] * 4, rel=1e-5)
    assert min(free) > 1e3, free  # unclipped, the scaled loss's gradients are far larger


def test_warmup_cosine_floor_and_end():
    # Halfway through the cosine: r + (1 - r) / 2; past the last step it stays at the floor.
    assert warmup_cosine(7, 10, 4, min_ratio=0.2) == pytest.approx(0.6)
    assert warmup_cosine(10, 10, 4, min_ratio=0.2) == pytest.approx(0.2)
    assert warmup_cosine(13, 10, 4, min_ratio=0.2) == pytest.approx(0.2)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)  # no warm-up: the peak at once


@pytest.mark.parametrize(("n", "world_size"), [(10, 3), (21, 2), (7, 4), (20, 2)])
def test_epoch_sampler_shards_partition_the_padded_epoch(monkeypatch, n, world_size):
    def shards(epoch, shuffle=True):
        out = []
        for rank in range(world_size):
            monkeypatch.setattr(dist_mod, "world", lambda r=rank: (r, world_size))
            s = EpochSampler(n, shuffle=shuffle, seed=5)
            s.set_epoch(epoch)
            out.append((list(s), len(s)))
        return out

    per_rank = -(-n // world_size)  # ceil
    for epoch in (0, 1):
        got = shards(epoch)
        assert all(len(idx) == length == per_rank for idx, length in got)
        # Position i of rank r is position i * W + r of one permutation of 0..n-1, padded by
        # wrapping around to a multiple of W: every sample once, the first few twice.
        merged = [got[r][0][i] for i in range(per_rank) for r in range(world_size)]
        assert sorted(merged[:n]) == list(range(n))
        assert merged[n:] == merged[: per_rank * world_size - n]
        if epoch == 0:
            first = merged
    assert merged != first  # a new permutation every epoch (seed + epoch)
    unshuffled = shards(0, shuffle=False)
    merged = [unshuffled[r][0][i] for i in range(per_rank) for r in range(world_size)]
    assert merged[:n] == list(range(n))


def test_make_loader_splits_the_global_batch_across_processes(monkeypatch):
    monkeypatch.setattr(dist_mod, "world", lambda: (1, 2))
    loader = make_loader(toy_dataset(n=20), batch_size=8, seed=1, device="cpu")
    assert loader.batch_size == 4 and len(loader) == 3  # 10 samples on this rank
    with pytest.raises(ValueError, match="batch size 7 is not divisible by 2 processes"):
        make_loader(toy_dataset(n=20), batch_size=7, device="cpu")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    # The global generators a resume must put back (legacy numpy's included: user code uses it).
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)  # noqa: NPY002
    path = save_checkpoint(tmp_path / "c.safetensors", toy_model().state_dict(), rng=True)

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())  # noqa: NPY002

    before = draws()
    ckpt = load_checkpoint(path)
    assert draws() != before
    ckpt.restore_rng()
    assert draws() == before
    plain = save_checkpoint(tmp_path / "p.safetensors", toy_model().state_dict())
    with pytest.raises(CheckpointError, match="holds no RNG state"):
        load_checkpoint(plain).restore_rng()


def test_optimizer_is_adamw_with_the_configs_betas_decaying_matrices_only():
    trainer = Trainer(toy_model(), mse_loss, toy_config(weight_decay=0.05, betas=(0.8, 0.95)))
    model = trainer.model
    decay, no_decay = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[3].bias)}
    assert all(g["betas"] == (0.8, 0.95) for g in trainer.optimizer.param_groups)


def test_train_metrics_are_sample_weighted_and_epochs_draw_fresh_randomness():
    # 36 samples in batches of 8: four of 8 and one of 4. A loss equal to the batch size
    # (zero gradient) averages to sum(n_b^2) / sum(n_b) per sample, not to a mean over batches.
    draws = []

    def loss_fn(model, batch):
        x, _ = batch
        draws.append(torch.rand(()).item())
        return (model(x) * 0).sum() + len(x), {"n": len(x)}

    loader = make_loader(toy_dataset(n=36), batch_size=8, seed=1)
    result = Trainer(toy_model(), loss_fn, toy_config(epochs=2)).fit(loader)
    for row in result.history:
        assert row["train_loss"] == pytest.approx((4 * 64 + 16) / 36)
        assert row["train_n"] == pytest.approx((4 * 64 + 16) / 36)
    assert draws[:5] != draws[5:]  # each epoch is seeded anew, not replayed


def test_select_mode_min_keeps_the_lowest(tmp_path):
    scores = iter([0.3, 0.1, 0.2])
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer = Trainer(toy_model(), mse_loss, toy_config(epochs=3), tmp_path)
    result = trainer.fit(loader, evaluate=lambda m: {"val": next(scores)}, select="val", mode="min")
    assert result.best_epoch == 2 and result.best_metrics["val"] == 0.1


def test_resume_keeps_selection_and_patience_state(tmp_path):
    # Patience 3 on scores 0.5, 0.4, 0.3, 0.2, 0.9: best epoch 1, stop after epoch 4. A run
    # killed while evaluating epoch 3 resumes from the checkpoint after its step 4 of 5 (the
    # last step's is the end-of-epoch one) and must end in the same result.
    def fit(run_dir, scores, resume=False):
        loader = make_loader(toy_dataset(), batch_size=8, seed=1)
        config = toy_config(epochs=5, patience=3, checkpoint_every=1)
        trainer = Trainer(toy_model(dropout=0.3), mse_loss, config, run_dir, task="toy")

        def evaluate(model):
            score = next(scores)
            if score is None:
                raise RuntimeError("simulated kill during evaluation")
            return {"val": score}

        return trainer.fit(loader, evaluate=evaluate, select="val", resume=resume)

    full = fit(tmp_path / "full", iter([0.5, 0.4, 0.3, 0.2, 0.9]))
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(tmp_path / "cut", iter([0.5, 0.4, None]))
    meta = load_checkpoint(tmp_path / "cut" / "last.safetensors").meta
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (2, 4, 14)
    assert (meta["best_epoch"], meta["best_value"], meta["bad_epochs"]) == (1, 0.5, 1)
    assert meta["best_metrics"]["val"] == 0.5 and len(meta["history"]) == 2
    resumed = fit(tmp_path / "cut", iter([0.3, 0.2, 0.9]), resume=True)
    assert full.stopped_early and resumed.stopped_early
    assert full.best_epoch == resumed.best_epoch == 1
    keys = ("epoch", "train_loss", "train_mse", "lr", "val")
    assert [[r[k] for k in keys] for r in resumed.history] == [
        [r[k] for k in keys] for r in full.history
    ]
    assert len(full.history) == 4
    for k, v in full.best_state.items():
        assert torch.equal(resumed.best_state[k], v), k
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.02}, "lr 0.01 -> 0.02"),
        ({"weight_decay": 0.1}, "weight_decay 0.05 -> 0.1"),
        ({"warmup_epochs": 2}, "warmup_epochs 1 -> 2"),
        ({"grad_clip": None}, "grad_clip 1.0 -> None"),
        ({"betas": (0.9, 0.999)}, "betas [0.9, 0.99] -> [0.9, 0.999]"),
        ({"precision": "bf16"}, "precision 'float32' -> 'bf16'"),
        ({"patience": 5}, "patience None -> 5"),
        ({"epochs": 1}, "epochs 2 -> 1"),
    ],
)
def test_resume_refuses_other_training_settings(tmp_path, changes, message):
    _fit(tmp_path, epochs=2)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(CheckpointError, match=re.escape(f"other data or settings ({message})")):
        _fit(tmp_path, resume=True, **{"epochs": 2, **changes})
    assert (tmp_path / "config.json").read_text() == before  # the record stays the run's


@pytest.mark.parametrize(
    ("resumed", "message"),
    [
        ({"lr": 0.02, "min_lr": 0.002}, "lr 0.01 -> 0.02"),  # min_lr in step: derived from lr
        ({"lr": 0.02}, "lr 0.01 -> 0.02"),
        ({"min_lr": 0.002}, "min_lr 0.001 -> 0.002"),
        ({"lr": 0.02, "min_lr": 0.003}, "lr 0.01 -> 0.02, min_lr 0.001 -> 0.003"),
        # min_lr / lr from 0.1 down to 0.075: out of step, though min_lr grew with lr
        ({"lr": 0.02, "min_lr": 0.0015}, "lr 0.01 -> 0.02, min_lr 0.001 -> 0.0015"),
    ],
)
def test_a_min_lr_that_follows_lr_is_not_named_as_a_change_of_its_own(tmp_path, resumed, message):
    _fit(tmp_path, epochs=2, min_lr=0.001)
    with pytest.raises(CheckpointError, match=re.escape(f"other data or settings ({message})")):
        _fit(tmp_path, resume=True, **{"epochs": 2, "min_lr": 0.001, **resumed})


def test_a_run_recorded_without_min_lr_resumed_with_another_lr_names_lr(tmp_path):
    # An older config.json without min_lr: nothing to keep in step, the lr is the change.
    _fit(tmp_path, epochs=2, min_lr=0.001)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["train"]["min_lr"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    changed = re.escape("other data or settings (lr 0.01 -> 0.02)")
    with pytest.raises(CheckpointError, match=changed):
        _fit(tmp_path, resume=True, epochs=2, lr=0.02, min_lr=0.002)


def test_resume_may_change_device_logging_and_grow_epochs(tmp_path):
    _fit(tmp_path, epochs=2)
    changes = {"progress": True, "log_every": 3, "checkpoint_every": 2, "epochs": 3}
    _, result = _fit(tmp_path, resume=True, **changes)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["epochs"] == 3


def test_a_resume_says_where_it_continues(tmp_path, capsys):
    _fit(tmp_path / "new", resume=True, epochs=1)
    assert f"{tmp_path / 'new'}: no checkpoint to resume, training from the start" in (
        capsys.readouterr().out
    )
    _fit(tmp_path / "new", resume=True, epochs=1)
    assert f"{tmp_path / 'new'}: already trained for 1 epoch, nothing to do" in (
        capsys.readouterr().out
    )
    _fit(tmp_path / "run", epochs=1)
    _fit(tmp_path / "run", resume=True, epochs=3)
    assert f"{tmp_path / 'run'}: resuming at epoch 2/3\n" in capsys.readouterr().out
    _fit(tmp_path / "run", resume=True, epochs=3)
    assert f"{tmp_path / 'run'}: already trained for 3 epochs, nothing to do" in (
        capsys.readouterr().out
    )


def _fit_selecting(run_dir, resume: bool):
    """Two epochs that keep best.safetensors as well as last.safetensors."""
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer = Trainer(toy_model(), mse_loss, toy_config(epochs=2), run_dir, task="toy")
    return trainer.fit(loader, evaluate=lambda m: {"score": 1.0}, select="score", resume=resume)


def test_a_corrupt_last_checkpoint_says_what_is_left_and_what_to_do(tmp_path):
    _fit_selecting(tmp_path, resume=False)
    last = tmp_path / "last.safetensors"
    last.write_bytes(last.read_bytes()[:100])  # cut short, as by a full disk
    best = (tmp_path / "best.safetensors").read_bytes()
    with pytest.raises(CheckpointError) as err:
        _fit_selecting(tmp_path, resume=True)
    message = str(err.value)
    assert message.startswith(f"corrupt or unreadable checkpoint {last}")
    assert f"cannot resume from it; {tmp_path / 'best.safetensors'} is a separate file" in message
    assert message.endswith(f"to train again, move {tmp_path} aside and start a new run")
    assert (tmp_path / "best.safetensors").read_bytes() == best  # nothing was overwritten


def test_resume_may_move_to_another_device(tmp_path):
    _fit(tmp_path, epochs=1)
    _, result = _fit(tmp_path, resume=True, epochs=2, device="auto")  # "auto" is the CPU here
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["train"]["device"] == "auto"


def test_resume_of_a_run_recorded_before_a_training_setting_existed(tmp_path):
    _fit(tmp_path, epochs=1)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["train"]["precision"]  # an older config.json: the field did not exist yet
    (tmp_path / "config.json").write_text(json.dumps(config))
    _, result = _fit(tmp_path, resume=True, epochs=2)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_config_changes_names_the_entries_of_a_dict_that_differ():
    from energy_transformer.train import config_changes, describe_changes

    saved = {"train": {"lr": 0.01, "epochs": 2, "nested": {"a": 1}}, "k": 10}
    current = {"train": {"lr": 0.02, "epochs": 2, "nested": {"a": 2}}, "k": 10}
    changed = config_changes(saved, current)
    assert changed == [("train.lr", 0.01, 0.02), ("train.nested.a", 1, 2)]
    assert describe_changes(changed) == "train.lr 0.01 -> 0.02, train.nested.a 1 -> 2"
    # A dict replaced by something else is one change of the whole entry.
    assert config_changes({"train": {"lr": 1}}, {"train": None}) == [("train", {"lr": 1}, None)]
    assert config_changes(saved, {**current, "k": (1, 2)}, ["k"]) == [("k", 10, [1, 2])]


def test_a_resume_mid_epoch_says_which_step_it_continues_at(tmp_path, capsys):
    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, step 3: after the step-2 checkpoint of that epoch
            raise RuntimeError("simulated kill")
        return mse_loss(model, batch)

    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(tmp_path, loss_fn=crashing, checkpoint_every=2)
    steps = len(make_loader(toy_dataset(), batch_size=8, seed=1))
    capsys.readouterr()
    _fit(tmp_path, resume=True, checkpoint_every=2)
    assert f"{tmp_path}: resuming at epoch 2/3, step 3/{steps}\n" in capsys.readouterr().out


def test_run_weights_is_the_file_given_else_best_else_last(tmp_path):
    from energy_transformer.train import run_weights

    assert run_weights(tmp_path) == tmp_path / "last.safetensors"
    (tmp_path / "best.safetensors").write_bytes(b"")
    assert run_weights(str(tmp_path)) == tmp_path / "best.safetensors"
    (tmp_path / "epoch3.safetensors").write_bytes(b"")
    assert run_weights(tmp_path / "epoch3.safetensors") == tmp_path / "epoch3.safetensors"


def test_a_corrupt_last_checkpoint_without_best_says_only_how_to_start_over(tmp_path):
    _fit_selecting(tmp_path, resume=False)
    last, best = tmp_path / "last.safetensors", tmp_path / "best.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError) as unreadable:
        load_checkpoint(last)
    start_over = f"to train again, move {tmp_path} aside and start a new run"
    with pytest.raises(CheckpointError) as err:
        _fit_selecting(tmp_path, resume=True)
    assert str(err.value) == (
        f"{unreadable.value}: cannot resume from it; {best} is a separate file (et eval reads"
        f" it); {start_over}"
    )
    assert isinstance(err.value.__cause__, CheckpointError)  # the reader's own error, chained
    best.unlink()  # nothing else to point at: no claim of a separate file
    with pytest.raises(CheckpointError) as err:
        _fit_selecting(tmp_path, resume=True)
    assert str(err.value) == f"{unreadable.value}: cannot resume from it; {start_over}"


def test_entries_training_does_not_read_may_change_on_resume(tmp_path):
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)

    def fit(epochs: int, eval_size: int, may_change=("eval_size",)):
        extra = {"dataset": "toy", "eval_size": eval_size}
        trainer = Trainer(
            toy_model(), mse_loss, toy_config(epochs=epochs), tmp_path, extra_config=extra,
            may_change=may_change,
        )  # fmt: skip
        return trainer.fit(loader, resume=True)

    fit(1, eval_size=100)
    assert len(fit(2, eval_size=10).history) == 2  # the later evaluation's size moved
    assert json.loads((tmp_path / "config.json").read_text())["extra"]["eval_size"] == 10
    with pytest.raises(CheckpointError, match=r"eval_size 10 -> 20"):
        fit(2, eval_size=20, may_change=())  # unless the trainer is told it may
