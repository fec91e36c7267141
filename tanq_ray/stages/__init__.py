"""The recipe's stages, one module each, declared for :class:`tanq_ray.runner.Runner`.

Each module holds what its stage does as plain functions of the config
(usable alone, e.g. by tests), its typed outputs, and a :class:`~tanq_ray.runner.Stage`
(or a function that declares one per translator, round or row). Stages talk
to each other only through their outputs and files under ``config.output_dir``;
:mod:`tanq_ray.pipeline` and :mod:`tanq_ray.study` put them in order.
"""
