import json

import pytest
import torch
from torch import nn
from toy import killed_at_evaluation, mse_loss, toy_config, toy_dataset, toy_model

from energy_transformer.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    WeightEMA,
    load_checkpoint,
    make_loader,
    run_weights,
)
from energy_transformer.train.ema import ema_decay_at


def _config(**kw) -> TrainConfig:
    return toy_config(**{"ema_decay": 0.9, **kw})


def test_the_decay_warms_up_then_holds():
    assert ema_decay_at(0.99, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.99, 8) == pytest.approx(9 / 18)
    assert ema_decay_at(0.99, 10**4) == 0.99


def test_the_average_is_the_recursion_over_the_weights_it_was_given():
    model = nn.Linear(3, 2).double()
    ema = WeightEMA(model, decay=0.6)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # in place, as an optimizer step
        ema.update(step)
        d = ema_decay_at(0.6, step)
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-12)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training


def test_integer_buffers_are_copied_not_averaged():
    model = nn.BatchNorm1d(4)
    ema = WeightEMA(model, decay=0.5)
    model.train()
    for step in range(1, 4):
        model(torch.randn(8, 4))
        ema.update(step)
    assert int(ema.model.num_batches_tracked) == 3
    assert not torch.equal(ema.model.running_mean, model.running_mean)  # averaged


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match=f"ema_decay must be in \\(0, 1\\), got {decay}"):
        _config(ema_decay=decay)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        WeightEMA(nn.Linear(2, 2), decay)


def _fit(run_dir, resume=False, evaluate=None, select=None, **kw):
    loader = make_loader(toy_dataset(), batch_size=8, seed=1)
    trainer = Trainer(toy_model(), mse_loss, _config(**kw), run_dir, task="toy")
    return trainer, trainer.fit(loader, evaluate=evaluate, select=select, resume=resume)


def test_evaluation_and_selection_see_the_average_not_the_live_weights(tmp_path):
    seen = []

    def evaluate(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": float(len(seen) == 2)}  # epoch 2 is the best

    trainer, result = _fit(tmp_path, evaluate=evaluate, select="score")
    assert trainer.evaluated is trainer.ema.model
    for k, v in trainer.ema.state_dict().items():
        torch.testing.assert_close(seen[-1][k], v)  # the last evaluation saw the average
        assert not torch.equal(v, trainer.model.state_dict()[k])  # which is not the live
        torch.testing.assert_close(result.best_state[k], seen[1][k])
    best = load_checkpoint(tmp_path / "best.safetensors").model_state
    assert all(torch.equal(best[k], v) for k, v in result.best_state.items())
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert all(torch.equal(last.model_state[k], v) for k, v in trainer.model.state_dict().items())
    assert all(torch.equal(last.ema_state[k], v) for k, v in trainer.ema.state_dict().items())


def test_without_selection_the_final_average_is_what_eval_reads(tmp_path):
    trainer, result = _fit(tmp_path)
    assert run_weights(tmp_path) == tmp_path / "best.safetensors"
    saved = load_checkpoint(tmp_path / "best.safetensors")
    assert saved.meta == {"epoch": 3, "ema_decay": 0.9}
    for k, v in trainer.ema.state_dict().items():
        assert torch.equal(saved.model_state[k], v) and torch.equal(result.best_state[k], v)


def test_a_resumed_run_averages_as_an_uninterrupted_one(tmp_path):
    full, _ = _fit(tmp_path / "full", epochs=4)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(tmp_path / "cut", epochs=4, evaluate=killed_at_evaluation(3))
    resumed, _ = _fit(tmp_path / "cut", epochs=4, resume=True)
    for k, v in full.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k
        assert torch.equal(full.model.state_dict()[k], resumed.model.state_dict()[k]), k


def test_resume_refuses_another_decay_and_a_checkpoint_without_an_average(tmp_path):
    _fit(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match=r"ema_decay 0\.9 -> 0\.5"):
        _fit(tmp_path, epochs=2, resume=True, ema_decay=0.5)
    _fit(tmp_path / "plain", epochs=1, ema_decay=None)
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    del config["train"]["ema_decay"]  # a run recorded before the setting existed
    (tmp_path / "plain" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="holds no moving average of the weights"):
        _fit(tmp_path / "plain", epochs=2, resume=True)
