"""Shipped hardware profiles (TOML data); load them with :func:`device.energy.load_profile`."""

__all__: list[str] = []
