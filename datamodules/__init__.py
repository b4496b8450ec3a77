"""litlab's LightningDataModules: one file per dataset."""
