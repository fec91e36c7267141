"""CycleGAN, the second view (PAPER.md §2; eq. 11-12), in the public implementation's form.

Generators ``G_A``: ceT1 -> hrT2 (the translator) and ``G_B``: hrT2 -> ceT1;
PatchGANs ``D_A`` (judges hrT2) and ``D_B`` (judges ceT1); LSGAN; L1 cycle loss
weighted ``lambda_cycle`` in both directions; L1 identity loss weighted
``lambda_cycle * lambda_identity``; image pools for the discriminators. One
step updates both generators (discriminators frozen), then both
discriminators. The six generator passes run as four calls: each generator
translates its own domain and, for the identity loss, the other domain's real
images in one batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tanq_ray.models.adversarial import generator_adversarial_loss, discriminator_backward
from tanq_ray.models.base import Batch, TranslatorModel, adam, unpack_batch
from tanq_ray.models.config import CycleGANConfig
from tanq_ray.models.discriminator import PatchDiscriminator
from tanq_ray.models.generator import ResnetGenerator
from tanq_ray.models.losses import l1_loss
from tanq_ray.models.pool import ImagePool
from tanq_ray.models.weights import init_weights


class CycleGANModel(TranslatorModel):
    """Two ResNet generators and two PatchGANs; one Adam for the generators, one for the discriminators."""

    name = "cyclegan"
    translator_name = "G_A"

    @classmethod
    def describe(cls, config: CycleGANConfig) -> dict[str, str]:
        return {"norm": "in/in", "segdecoder": "false", "patch_select": "none"}

    def __init__(self, config: CycleGANConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.nets = {
            "G_A": ResnetGenerator(1, 1, c.ngf, c.n_blocks, antialias=c.antialias),
            "G_B": ResnetGenerator(1, 1, c.ngf, c.n_blocks, antialias=c.antialias),
            "D_A": PatchDiscriminator(1, c.ndf, c.n_layers_d, antialias=c.antialias),
            "D_B": PatchDiscriminator(1, c.ndf, c.n_layers_d, antialias=c.antialias),
        }
        for net in self.nets.values():
            init_weights(net, c.init_type, c.init_gain).to(self.device)
        self.G_A, self.G_B, self.D_A, self.D_B = self.nets.values()
        self.optimizers = {
            "G": adam([*self.G_A.parameters(), *self.G_B.parameters()], c.optim),
            "D": adam([*self.D_A.parameters(), *self.D_B.parameters()], c.optim),
        }
        self.pool_A, self.pool_B = ImagePool(c.pool_size), ImagePool(c.pool_size)  # fakes of ceT1 / of hrT2

    def step(self, batch: Batch) -> dict[str, float]:
        """Both generators, then both discriminators; returns the losses by name.

        ``G_adv`` and ``D`` (the ceT1 -> hrT2 direction, the names every
        translator uses), ``G_adv_reverse`` and ``D_reverse`` (hrT2 -> ceT1),
        ``cycle_A``, ``cycle_B``, ``idt_A``, ``idt_B`` (weighted), ``G`` (the
        generators' total).
        """
        self._train_mode()
        c = self.config
        real_a, _, real_b = unpack_batch(batch, self.device)
        na, nb = real_a.shape[0], real_b.shape[0]
        identity = c.lambda_identity > 0

        out_a = self.G_A(torch.cat([real_a, real_b]) if identity else real_a)  # fake_B [, G_A(real_B)]
        out_b = self.G_B(torch.cat([real_b, real_a]) if identity else real_b)  # fake_A [, G_B(real_A)]
        fake_b, fake_a = out_a[:na], out_b[:nb]
        rec_a, rec_b = self.G_B(fake_b), self.G_A(fake_a)

        losses = {
            "G_adv": generator_adversarial_loss(self.D_A, fake_b),
            "G_adv_reverse": generator_adversarial_loss(self.D_B, fake_a),
            "cycle_A": c.lambda_cycle * l1_loss(rec_a, real_a),  # eq. (11), ||F(G(I_s)) - I_s||
            "cycle_B": c.lambda_cycle * l1_loss(rec_b, real_b),  # eq. (11), ||G(F(I_t)) - I_t||
        }
        if identity:
            losses["idt_A"] = c.lambda_cycle * c.lambda_identity * l1_loss(out_a[na:], real_b)
            losses["idt_B"] = c.lambda_cycle * c.lambda_identity * l1_loss(out_b[nb:], real_a)
        loss_g = sum(losses.values())  # eq. (12) plus the identity terms
        self.optimizers["G"].zero_grad(set_to_none=True)
        loss_g.backward()
        self._apply_gradients(self.optimizers["G"])

        loss_d_a, loss_d_b = discriminator_backward(
            self.optimizers["D"],
            [(self.D_A, real_b, self.pool_B.query(fake_b)), (self.D_B, real_a, self.pool_A.query(fake_a))],
        )
        self._apply_gradients(self.optimizers["D"])
        self.steps += 1
        return {name: loss.item() for name, loss in losses.items()} | {
            "G": loss_g.item(),
            "D": loss_d_a,
            "D_reverse": loss_d_b,
        }

    def _generate(self, images: Tensor, masks: Tensor | None) -> Tensor:
        return self.G_A(images)

    def _extra_state(self) -> dict[str, Any]:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
