"""`--compile`: torch.compile of the experiment's networks, in place, training the same weights as without it."""

from __future__ import annotations

import pytest
import torch
from conftest import cli, config, tiny


@pytest.mark.parametrize("experiment", ["xor_mlp", "fashion_cnn"])
def test_compiled_networks_train_the_same_weights(experiment):
    args = [
        "fit",
        "--config",
        config(experiment),
        *tiny(experiment),
        "--model.init_args.net.init_args.dropout=0" if experiment == "fashion_cnn" else "--trainer.max_epochs=1",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
    ]
    plain, compiled = cli(*args).model, cli(*args, "--compile=true").model
    assert plain.trainer.global_step == compiled.trainer.global_step == 3
    nets = compiled.compiled_modules()
    assert nets and all(net._compiled_call_impl is not None for net in nets)
    assert all(getattr(net, "_compiled_call_impl", None) is None for net in plain.compiled_modules())
    assert list(plain.state_dict()) == list(compiled.state_dict())  # in place: checkpoints keep their names
    # the same weights: the same outputs and gradients through the compiled networks as through the eager ones
    # (training trajectories are not compared: Adam turns float rounding in near-zero gradients into whole steps)
    plain.load_state_dict(compiled.state_dict())
    batch = next(iter(compiled.trainer.datamodule.val_dataloader()))
    losses = []
    for model in (plain.eval(), compiled.eval()):  # eval: batch norms by their running statistics
        model.zero_grad()
        loss = model(batch["x"]).square().mean()  # both families' batches hold their inputs as "x"
        loss.backward()
        losses.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss, grads), (compiled_loss, compiled_grads) = losses
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-4, atol=1e-6)  # float32 sums in another order
    assert len(grads) == len(compiled_grads) > 0
    for grad, compiled_grad in zip(grads, compiled_grads):
        torch.testing.assert_close(compiled_grad, grad, rtol=1e-3, atol=1e-4 * float(grad.abs().max()))


def test_compile_is_off_unless_asked():
    trainer = cli("fit", "--config", config("xor_mlp"), *tiny("xor_mlp"), "--trainer.fast_dev_run=1").trainer
    assert trainer.lightning_module.compile_mode is None
    assert trainer.lightning_module.net._compiled_call_impl is None
