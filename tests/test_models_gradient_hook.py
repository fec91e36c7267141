"""The gradient hook a data-parallel trainer uses sees every optimiser step, after backward."""

import torch

from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch


def test_hook_sees_each_optimiser_with_gradients_and_can_change_the_update() -> None:
    torch.manual_seed(0)
    batch = synthetic_batch(2, 32, seed=1)
    for name, config in [
        ("tanq", TanqConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 12, 13), num_patches=16)),
        ("cyclegan", CycleGANConfig(ngf=8, ndf=8, n_blocks=2, pool_size=0)),
    ]:
        model = build_model(name, config)
        seen: list[str] = []
        names = {id(opt): key for key, opt in model.optimizers.items()}

        def zero_all(optimizers) -> None:
            for optimizer in optimizers:
                seen.append(names[id(optimizer)])
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                assert grads, "the hook runs after backward"
                for grad in grads:
                    grad.zero_()

        model.gradient_hook = zero_all
        before = {k: [p.detach().clone() for p in net.parameters()] for k, net in model.nets.items()}
        model.step(batch)
        assert sorted(seen) == sorted(model.optimizers), name
        for key, net in model.nets.items():  # zero gradients: Adam leaves every weight where it was
            for old, new in zip(before[key], net.parameters()):
                torch.testing.assert_close(old, new.detach())
