"""Options and fixtures for the whole test tree (pytest reads options only from the root
conftest). The shared fixtures live in tests/support/fixtures.py."""

from __future__ import annotations

import pytest

from tests.support.fixtures import (  # noqa: F401 - fixtures and a hook, found by name
    aclient,
    log_dir,
    pytest_runtest_makereport,
    server,
    spawn,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sdk",
        default=None,
        help="comma-separated SDKs for the conformance suite (default: $HIVEGRID_SDKS or "
        "python,go,typescript)",
    )
