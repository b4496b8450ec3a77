"""litlab's LightningModules: one file per experiment family; shared nn.Modules live in `components/`."""
