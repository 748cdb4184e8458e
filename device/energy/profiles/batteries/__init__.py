"""Shipped battery chemistries (TOML data); load them with :func:`device.energy.load_chemistry`."""

__all__: list[str] = []
