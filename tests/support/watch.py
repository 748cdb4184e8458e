"""The ``watch`` data set in tests: skip without seglearn, unless it is required.

``VEGA_EMU_REQUIRE_WATCH=1`` (set where the ``test`` extra, which carries seglearn, is
installed) turns the skip into a failure, so that a CI run cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest

from dataset_stream.errors import SourceError
from dataset_stream.sources.watch import seglearn_data_path


def require_watch() -> None:
    """Skip the calling test when seglearn's data is not installed (fail when required)."""
    try:
        seglearn_data_path()
    except SourceError as exc:
        if os.environ.get("VEGA_EMU_REQUIRE_WATCH") == "1":
            pytest.fail(f"VEGA_EMU_REQUIRE_WATCH=1 but {exc}")
        pytest.skip(f"watch data set not installed: {exc}")


__all__ = ["require_watch"]
