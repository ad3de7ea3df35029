"""Data: file readers, where data comes from, and LightningDataModules (no Hydra here)."""
