"""Fixtures: the tiny model's fp32 and int8 bundles (see tiny_bundles.py)."""

import pytest

from tests.export.tiny_bundles import tiny_bundle


@pytest.fixture(scope="session")
def fp32_bundle(tmp_path_factory, tiny_llama_dir):
    return tiny_bundle(tmp_path_factory, tiny_llama_dir, "fp32")


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory, tiny_llama_dir):
    return tiny_bundle(tmp_path_factory, tiny_llama_dir, "int8")
