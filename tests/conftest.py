"""Options for the whole test tree (pytest reads them only from the root conftest)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sdk",
        default=None,
        help="comma-separated SDKs for the conformance suite (default: $HIVEGRID_SDKS or "
        "python,go,typescript)",
    )
