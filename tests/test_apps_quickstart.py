"""lipxai.apps.quickstart: one way through the data (the test split read once, the model
exported once) and what the report says about the run."""

import pytest
from _tiny_run import TINY

import lipxai.train.rundir
from lipxai import cli, data
from lipxai.apps import quickstart


def test_average_images_per_sec_weighs_each_window_by_its_steps():
    records = [{"step": 50, "images_per_sec": 100.0}, {"step": 100, "images_per_sec": 300.0},
               {"step": 110, "images_per_sec": 10.0}]
    # 50 steps in 0.5 s, 50 in 1/6 s, 10 in 1 s (batch 1): 110 images in 5/3 s
    assert quickstart.average_images_per_sec(records, 1) == pytest.approx(110 / (0.5 + 1 / 6 + 1))
    assert quickstart.average_images_per_sec(records, 256) == pytest.approx(110 / (0.5 + 1 / 6 + 1))
    assert quickstart.average_images_per_sec([], 256) is None


@pytest.mark.dataset("mnist")
def test_quickstart_reads_the_test_split_once_and_exports_once(tmp_path, monkeypatch, capsys):
    loads, exports = [], []
    load_split, export, train = data.load_split, lipxai.train.rundir.export, quickstart.train

    def counted_load(name, split, **kwargs):
        loads.append((name, split))
        return load_split(name, split, **kwargs)

    def counted_export(*args, **kwargs):
        exports.append(args)
        return export(*args, **kwargs)

    def counted_train(*args, **kwargs):  # the training reads its own splits: count after it
        state = train(*args, **kwargs)
        loads.clear()
        return state

    monkeypatch.setattr(data, "load_split", counted_load)
    monkeypatch.setattr(lipxai.train.rundir, "export", counted_export)
    monkeypatch.setattr(quickstart, "train", counted_train)
    workdir = tmp_path / "quick"
    overrides = [*TINY, "--config.train.num_steps=4", "--config.train.eval_every=4",
                 "--config.evaluate.n=4", "--config.evaluate.samples=1",
                 "--config.evaluate.methods=('saliency',)", "--config.evaluate.metrics=('sparseness',)"]
    assert cli.main(["quickstart", "--workdir", str(workdir), *overrides]) == 0, capsys.readouterr().err
    assert loads == [("mnist", "test")] and len(exports) == 1
    report = (workdir / "report.md").read_text()
    assert f"Config: {quickstart.default_config()} {' '.join(overrides)}." in report
    run = lipxai.train.rundir.load_run(str(workdir))
    average = quickstart.average_images_per_sec(run.metrics("train"), 32)
    assert f"{average:.0f} images/s on average" in report
    assert "red pixels raise the" in report and "| saliency |" in report
