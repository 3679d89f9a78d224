"""``lipxai reproduce``: each experiment end to end in ``--fast`` mode (the pipeline, not the
papers' claims, which need the full runs of docs/results.md), and the pieces it is made of."""

import json

import pytest

from lipxai import cli
from lipxai.apps import report
from lipxai.apps.reproduce import (
    EXPERIMENTS,
    RunSpec,
    boundary_attributions,
    certified_explanations,
    lipschitz_saliency,
    runs,
    scaat,
)


def test_run_spec_names_its_directory_by_config_and_overridden_keys():
    spec = RunSpec("explanation_training.py:certified_explanation/mnist/fcn",
                   ("objective.terms.certified_explanation.eps=0.01",))
    assert spec.slug == "certified_explanation-mnist-fcn_eps=0.01"
    fast = spec.resolved(fast=True)
    assert fast.objective.terms.certified_explanation.eps == 0.01
    assert fast.train.num_steps == 12 and spec.resolved(fast=False).train.num_steps > 12
    assert f"train.num_steps={fast.train.num_steps}" in runs.FAST_OVERRIDES


def test_markdown_table_has_a_row_per_row_and_a_separator():
    table = report.markdown_table(["a", "b"], [[1, "x"], [2, "y"]]).splitlines()
    assert table == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]


def test_unknown_experiment_is_one_line_and_exit_2(capsys):
    assert cli.main(["reproduce", "no_such_experiment"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "certified_explanations" in err[0]


@pytest.mark.dataset("mnist")
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_runs_in_fast_mode_and_writes_its_results(name, tmp_path, capsys, monkeypatch):
    trained, train = [], runs.train
    monkeypatch.setattr(runs, "train", lambda *a, **k: trained.append(a[1]) or train(*a, **k))
    assert cli.main(["reproduce", name, "--fast", "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    folder = tmp_path / name
    for ext in ("md", "json", "png"):
        assert (folder / f"{name}_fast.{ext}").stat().st_size > 0
    result = json.loads((folder / f"{name}_fast.json").read_text())
    assert result["provenance"]["command"] == f"lipxai reproduce {name} --fast"
    assert result["findings"] and result["tables"][0]["rows"]
    md = (folder / f"{name}_fast.md").read_text()
    for key in ("command", "date", "commit", "machine"):
        assert f"- {key}: " in md
    for row in result["results"]:
        assert 0.0 <= row["accuracy"] <= 1.0
    # one run directory per run, each trained once
    runs_made = sorted(p.name for p in (folder / "runs-fast").iterdir())
    assert len(runs_made) == len(trained) == len(set(trained))



def test_experiments_share_the_runs_they_have_in_common():
    slugs = [spec.slug for *_, spec in scaat.specs(scaat.FULL)]
    assert len(slugs) == len(set(slugs)) == 2 * 4 * 3   # datasets x methods x seeds
    certified = {spec.slug for *_, spec in certified_explanations.specs(certified_explanations.FULL)}
    assert {"standard-mnist-cnn", "standard-fashion_mnist-cnn"} <= certified & set(slugs)   # seed 0
    assert "scaat-mnist-cnn_seed=2" in slugs
    assert ({spec.slug for *_, spec in lipschitz_saliency.specs(lipschitz_saliency.FULL)}
            == {spec.slug for *_, spec in boundary_attributions.specs(boundary_attributions.FULL)})
