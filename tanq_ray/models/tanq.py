"""TANQ: QS-Attn contrastive translation with target-aware norms and a SegDecoder (PAPER.md §1).

With ``encoder_norm=decoder_norm="in"`` and ``segdecoder=False`` the same code
is QS-Attn (``patch_select="qs_global"``) or CUT (``"random"``).

One training step, with B ceT1 slices ``x``, labels ``y`` and B' hrT2 slices ``t``::

    G(cat(x, t))            -> fake = G(x), idt = G(t), encoder features of x and t, encoder output
    D update                   LSGAN on t vs fake (detached)
    E(cat(fake, idt))       -> encoder features of the translations (stops at the last NCE layer)
    L_G = λ_gan L_adv + λ_nce (L_con^X + L_con^Y)/2 + λ_seg L_seg          (eq. 10)

The keys of both PatchNCE terms are the encoder features of ``x`` and ``t``
that the translating pass already computed (same weights, same inputs, same
masks), so the generator's encoder runs twice per step instead of the public
code's six times. ``x`` and ``fake`` use ``y`` in their norms (the translation
keeps the anatomy of ``x``); ``t`` and ``idt`` have no mask (instance norm).
Eq. (10) is written as a plain sum; like the public CUT/QS-Attn code we weight
the two contrastive terms by 1/2 each when the identity term is on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tanq_ray.models.adversarial import generator_adversarial_loss, discriminator_backward
from tanq_ray.models.base import Batch, TranslatorModel, adam, evaluating, unpack_batch
from tanq_ray.models.config import TanqConfig
from tanq_ray.models.discriminator import PatchDiscriminator
from tanq_ray.models.generator import ResnetGenerator
from tanq_ray.models.losses import patch_nce_loss, segmentation_loss
from tanq_ray.models.patches import PatchProjector, PatchSampler, PatchSelection, gather_patches
from tanq_ray.models.weights import init_weights


class TanqModel(TranslatorModel):
    """Generator ``G`` (with SegDecoder), PatchGAN ``D``, projector ``F``; Adam on each."""

    name = "tanq"
    translator_name = "G"

    @classmethod
    def describe(cls, config: TanqConfig) -> dict[str, str]:
        return {
            "norm": f"{config.encoder_norm}/{config.decoder_norm}",
            "segdecoder": str(config.segdecoder).lower(),
            "patch_select": config.patch_select,
        }

    def __init__(self, config: TanqConfig, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = config
        self.G = ResnetGenerator(
            1, 1, c.ngf, c.n_blocks, c.encoder_norm, c.decoder_norm, c.segdecoder,
            region_affine=c.region_affine, antialias=c.antialias,
        )
        self.D = PatchDiscriminator(1, c.ndf, c.n_layers_d, antialias=c.antialias)
        self.F = PatchProjector(self.G.layer_channels(c.nce_layers), c.projector_dim)
        self.nets = {"G": self.G, "D": self.D, "F": self.F}
        for net in self.nets.values():
            init_weights(net, c.init_type, c.init_gain).to(self.device)
        self.optimizers = {name: adam(net.parameters(), c.optim) for name, net in self.nets.items()}
        self.sampler = PatchSampler(c.num_patches, c.patch_select, c.qs_layers)
        self.last_selection: dict[int, PatchSelection] = {}
        """NCE layer -> positions selected in the last step; rows 0..B-1 are the ceT1 slices, then the hrT2."""

    def step(self, batch: Batch) -> dict[str, float]:
        """One D and one G (+F) update; returns ``D``, ``G_adv``, ``nce_x``, ``nce_y``, ``seg``, ``G``."""
        self._train_mode()
        c = self.config
        source, label, target = unpack_batch(batch, self.device)
        b = source.shape[0]
        identity = c.nce_identity and c.lambda_nce > 0
        images = torch.cat([source, target]) if identity else source
        labels = torch.cat([label, label.new_zeros(target.shape[0], *target.shape[2:])]) if identity else label

        out = self.G.forward_features(images, labels, c.nce_layers)
        fake = out.image[:b]

        (loss_d,) = discriminator_backward(self.optimizers["D"], [(self.D, target, fake)])
        self._apply_gradients(self.optimizers["D"])

        loss_adv = generator_adversarial_loss(self.D, fake)
        nce = self._patch_nce(out.features, self.G.encode_features(out.image, labels, c.nce_layers))
        zero = nce.new_zeros(())
        loss_nce_x = nce[:b].mean()
        loss_nce_y = nce[b:].mean() if identity else zero
        loss_seg = segmentation_loss(self.G.segment(out.bottleneck[:b]), label) if c.segdecoder else zero
        loss_g = (
            c.lambda_gan * loss_adv
            + c.lambda_nce * ((loss_nce_x + loss_nce_y) / 2 if identity else loss_nce_x)
            + c.lambda_seg * loss_seg
        )
        self.optimizers["G"].zero_grad(set_to_none=True)
        self.optimizers["F"].zero_grad(set_to_none=True)
        loss_g.backward()
        self._apply_gradients(self.optimizers["G"], self.optimizers["F"])

        self.steps += 1
        return {
            "D": loss_d,
            "G_adv": loss_adv.item(),
            "nce_x": loss_nce_x.item(),
            "nce_y": loss_nce_y.item(),
            "seg": loss_seg.item(),
            "G": loss_g.item(),
        }

    def _patch_nce(self, key_features: list[Tensor], query_features: list[Tensor]) -> Tensor:
        """Mean PatchNCE over layers and patches, per image: ``(B_total,)``.

        Patches are selected on the input's (key) features and the same
        selection - positions, and for QS the attention rows - is applied to
        the translation's (query) features.
        """
        selections = self.sampler.select(key_features)
        # positions only: keeping the attention rows would keep this step's autograd graph alive
        self.last_selection = {
            layer: PatchSelection(s.indices.detach(), s.grid) for layer, s in zip(self.config.nce_layers, selections)
        }
        keys = self.F([gather_patches(f, s) for f, s in zip(key_features, selections)])
        queries = self.F([gather_patches(f, s) for f, s in zip(query_features, selections)])
        per_layer = [patch_nce_loss(q, k, self.config.nce_temperature).mean(dim=1) for q, k in zip(queries, keys)]
        return torch.stack(per_layer).mean(dim=0)

    def _generate(self, images: Tensor, masks: Tensor | None) -> Tensor:
        return self.G(images, masks)

    @torch.no_grad()
    def segment(self, images: Tensor, masks: Tensor | None = None) -> Tensor:
        """SegDecoder prediction ``(B, H, W)`` int64 for ceT1 ``images`` (eval mode; needs ``segdecoder``)."""
        with evaluating(self.G):
            images = images.to(self.device, dtype=torch.float32)
            masks = None if masks is None else masks.to(self.device, dtype=torch.long)
            return self.G.segment(self.G.encode(images, masks)).argmax(dim=1)
