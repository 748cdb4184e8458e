"""What tests share besides fixtures (those are in the conftest.py files): one module an idea.

- :mod:`.times`: ``T0``, the stream's clock at seq 0 in every test, and ``NOW``.
- :mod:`.messages`: node messages built for tests (telemetry payloads, typed telemetry).
- :mod:`.metrics`: Prometheus text scraped and read back.
- :mod:`.mosquitto`: :func:`~.mosquitto.require_mosquitto`, skip or fail without the binary.
- :mod:`.pki`: certificates for TLS tests, made with ``openssl``.
- :mod:`.strace`: the mode each file is created with, seen by ``strace`` in a real process.
- :mod:`.statefiles`: a node's SQLite files fingerprinted, to show an input changed nothing.
- :mod:`.wait`: waits on events, and :func:`~.wait.wait_until` for state that has none.
- :mod:`.hostile`: the hostile-input harness (payloads with faults, a node in a thread).

Import from the module that holds a helper (``from tests.support.wait import wait_until``):
importing this package loads none of them.
"""

__all__: list[str] = []
