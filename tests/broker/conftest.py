"""Fixtures of the broker tests."""

from __future__ import annotations

import pytest

from tests.support.pki import PKI, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """The certificates of tests/support/pki.py, made once per run (client CN ``node-0000``)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
