"""lipxai.apps.quickstart: the average images/s the report quotes (the quickstart itself, its
one way through the data and its report: tests/test_cli.py)."""

import pytest

from lipxai.apps import quickstart


def test_average_images_per_sec_weighs_each_window_by_its_steps():
    records = [{"step": 50, "images_per_sec": 100.0}, {"step": 100, "images_per_sec": 300.0},
               {"step": 110, "images_per_sec": 10.0}]
    # 50 steps in 0.5 s, 50 in 1/6 s, 10 in 1 s (batch 1): 110 images in 5/3 s
    assert quickstart.average_images_per_sec(records, 1) == pytest.approx(110 / (0.5 + 1 / 6 + 1))
    assert quickstart.average_images_per_sec(records, 256) == pytest.approx(110 / (0.5 + 1 / 6 + 1))
    assert quickstart.average_images_per_sec([], 256) is None
