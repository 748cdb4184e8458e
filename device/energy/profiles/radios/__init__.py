"""Shipped radio profiles (TOML data); load them with :func:`device.energy.load_radio`."""

__all__: list[str] = []
