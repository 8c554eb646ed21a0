import os
import subprocess
from pathlib import Path

import pytest
import torch
from launch import torchrun
from safetensors.torch import load_file
from toy import mse_loss, toy_dataset, toy_model

from energy_transformer.train import TrainConfig, Trainer, make_loader

HERE = Path(__file__).parent


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_same_global_batch(tmp_path):
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd = torchrun(str(HERE / "ddp_worker.py"), str(out))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    loader = make_loader(toy_dataset(), batch_size=8, seed=3, device="cpu")
    config = TrainConfig(
        epochs=3, lr=1e-2, warmup_epochs=1, seed=3, device="cpu", progress=False, ema_decay=0.9
    )
    trainer = Trainer(toy_model(), mse_loss, config)
    single = trainer.fit(loader).model.state_dict()
    ddp = load_file(out)
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
    for k, v in trainer.ema.state_dict().items():  # the average follows the same steps
        torch.testing.assert_close(ddp[f"ema/{k}"], v, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(v, single[k])
    # The two runs really trained: the weights moved away from their initialisation.
    assert not torch.allclose(single["0.weight"], toy_model().state_dict()["0.weight"])


def test_a_device_this_machine_lacks_is_a_clear_error():
    from energy_transformer.train import resolve_device

    with pytest.raises(ValueError, match="unknown device 'gpu0': use cpu, cuda, cuda:N or auto"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1': CUDA is not available on this machine"):
            resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")
