"""The docs that are generated from the code are current."""

import os

from pybrokerd.docgen import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_configuration_reference_matches_the_options():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        assert f.read() == render(), "run: python -m pybrokerd.docgen > docs/configuration.md"
