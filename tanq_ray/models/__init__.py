"""Translation models (pure PyTorch, no Ray): TANQ / QS-Attn / CUT and CycleGAN.

This package's ``__init__`` imports nothing, so that ``tanq_ray.models.config``
stays importable without torch. Entry points:

- :mod:`tanq_ray.models.registry` - ``build_model(name, config, device)``, ``MODELS``
- :mod:`tanq_ray.models.base` - ``TranslatorModel`` (``step``, ``translate``, state dicts, learning rate), ``Batch``
- :mod:`tanq_ray.models.schedule` - ``linear_decay_lr``
- :mod:`tanq_ray.models.ablations` - ``ABLATION_ROWS``, ``ablation_config``
- :mod:`tanq_ray.models.visuals` - translation grid and patch-selection figures

Building blocks: ``norms`` (target-aware normalisation), ``generator``,
``discriminator``, ``patches`` (selection + projector), ``losses``,
``adversarial`` (shared LSGAN updates), ``pool``, ``weights``, ``tanq``,
``cyclegan``. See docs/translators.md.
"""
