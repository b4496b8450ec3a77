"""litlab's core: the launcher (`cli`), the `Experiment` base, callbacks, checkpoints, tracking, errors, optimizers and
schedules, hub and torchvision weights, export, and the few pieces an experiment's data and model both need
(`arithmetic`, `box_coding`). It imports no experiment: `datamodules` and `lightning_modules` import it, never the
other way round, and never each other."""
