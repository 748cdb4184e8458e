"""The test suite: one folder per layer, shared harnesses in :mod:`tests.support`."""

import pytest

# the harnesses assert too: their failures get pytest's detailed messages, as in a test module
pytest.register_assert_rewrite("tests.support")
