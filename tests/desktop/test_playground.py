"""Placeholder."""


def test_warm(demo_model):
    assert demo_model
