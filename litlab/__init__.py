"""litlab's core: the launcher (`__main__`, `cli`, `runs`), the `Experiment` base, callbacks, checkpoints, tracking,
figures, errors, optimizers and schedules, ONNX export and hyperparameter search (`tune`, `search_space`, `study`). It
names no experiment family: `datamodules` and `lightning_modules` import it, never the other way round, and never each
other."""
