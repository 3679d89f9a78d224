"""The `lipxai` command end to end on a tiny config, and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from _tiny_run import TINY

from lipxai import cli, data
from lipxai.apps import quickstart
from lipxai.train import rundir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lipxai(*args, env_extra=None):
    """The installed command, ``python -m lipxai``, in a subprocess."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lipxai", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def lipxai_main(capsys, *args):
    """The same command in this process (``cli.main``, what ``python -m lipxai`` runs), sharing
    its compiled programs with the test's other commands; what it printed, as a subprocess's."""
    capsys.readouterr()
    returncode = cli.main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["lipxai", *args], returncode, out, err)


@pytest.mark.dataset("mnist")
def test_quickstart_end_to_end_on_a_tiny_config(tmp_path, capsys, monkeypatch):
    """The quickstart in process (the test split read once after training, the model exported
    once, the report), then the follow-up commands as a user runs them: the first as the
    installed command in a subprocess, the others through ``cli.main`` in this process."""
    workdir = tmp_path / "quick"
    # a start rejected by its config leaves nothing that blocks the next one in the same folder
    assert cli.main(["quickstart", "--workdir", str(workdir), *TINY, "--config.train.batch_size=0"]) == 2
    assert "train.batch_size" in capsys.readouterr().err and not (workdir / "config.json").exists()
    loads, exports = [], []
    load_split, export, train = data.load_split, rundir.export, quickstart.train

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
    monkeypatch.setattr(rundir, "export", counted_export)
    monkeypatch.setattr(quickstart, "train", counted_train)
    overrides = [*TINY, "--config.train.num_steps=30", "--config.train.eval_every=30",
                 "--config.evaluate.n=6", "--config.evaluate.samples=2",
                 "--config.evaluate.methods=('saliency', 'smoothgrad')",
                 "--config.evaluate.metrics=('deletion', 'sparseness')"]
    assert cli.main(["quickstart", "--workdir", str(workdir), *overrides]) == 0, capsys.readouterr().err
    assert loads == [("mnist", "test")] and len(exports) == 1
    monkeypatch.undo()
    for name in ("report.md", "certify.json", "certified_accuracy.png", "examples.png", "metrics.jsonl",
                 "explanations.png", "evaluate.json", "evaluate_curves.png"):
        assert (workdir / name).exists(), name
    report = (workdir / "report.md").read_text()
    assert "explanations.png" in report and "| smoothgrad |" in report
    assert f"Config: {quickstart.default_config()} {' '.join(overrides)}." in report
    average = quickstart.average_images_per_sec(rundir.load_run(str(workdir)).metrics("train"), 32)
    assert f"{average:.0f} images/s on average" in report and "red pixels raise the" in report
    evaluation = json.loads((workdir / "evaluate.json").read_text())
    assert evaluation["n"] == 6 and set(evaluation["results"]) == {"saliency", "smoothgrad"}
    deletion = evaluation["results"]["smoothgrad"]["deletion"]
    assert 0 <= deletion["mean"] <= 1 and deletion["nan"] == 0
    result = json.loads((workdir / "certify.json").read_text())
    assert set(result["certified_accuracy"]) == {"0.5", "1.0", "1.58"}
    assert result["n"] == 10000
    assert 0 <= result["certified_accuracy"]["1.58"] <= result["certified_accuracy"]["0.5"] <= result["clean_accuracy"]
    assert 0 < result["lipschitz_lower"] <= result["lipschitz_upper"] <= 1 + 1e-4

    again = lipxai("certify", str(workdir), "--eps", "0.25,2", "--n", "500")
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads((workdir / "certify-test-n500-eps0.25_2.0.json").read_text())  # a partial run
    assert set(result["certified_accuracy"]) == {"0.25", "2.0"} and result["n"] == 500
    assert json.loads((workdir / "certify.json").read_text())["n"] == 10000  # the full run is kept
    assert "certified accuracy @ L2 eps=2.0" in again.stdout

    cert = lipxai_main(capsys, "certify", str(workdir), "--explanation", "--eps", "0,0.001", "--k", "5", "--n", "8")
    assert cert.returncode == 0, cert.stderr[-2000:]
    explanation = json.loads((workdir / "certify-test-n8-eps0.0_0.001-k5-explanation.json")
                             .read_text())["explanation"]
    assert explanation["n"] == 8 and explanation["k"] == 5 and set(explanation["eps"]) == {"0.0", "0.001"}
    exact, boxed = explanation["eps"]["0.0"], explanation["eps"]["0.001"]
    assert exact["topk_stable"] == 1.0 and exact["change_l2_median"] < 1e-5  # a point box: float noise only
    assert exact["prediction_certified"] == 1.0
    assert boxed["topk_certified_mean"] <= exact["topk_certified_mean"]
    assert boxed["change_l2_median"] > 0 and explanation["bounds"] == "ibp"

    symbolic = lipxai_main(capsys, "certify", str(workdir), "--explanation", "--bounds", "symbolic", "--eps",
                      "0.001", "--k", "5", "--n", "8")
    assert symbolic.returncode == 0, symbolic.stderr[-2000:]
    tighter = json.loads((workdir / "certify-test-n8-eps0.001-k5-symbolic-explanation.json")
                         .read_text())["explanation"]
    assert tighter["bounds"] == "symbolic" and "symbolic bounds" in symbolic.stdout
    tighter = tighter["eps"]["0.001"]  # never looser than IBP, so never weaker certificates
    assert tighter["topk_certified_mean"] >= boxed["topk_certified_mean"]
    assert tighter["change_l2_median"] <= boxed["change_l2_median"] * (1 + 1e-5)
    assert tighter["prediction_certified"] >= boxed["prediction_certified"]

    png = tmp_path / "grid.png"
    expl = lipxai_main(capsys, "explain", str(workdir), "--method", "saliency,gradcam,counterfactual", "--n", "3",
                  "--out", str(png))
    assert expl.returncode == 0, expl.stderr[-2000:]
    assert png.stat().st_size > 1000 and f"written {png}" in expl.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "--config", "configs/mnist_lip.py", "--workdir", "{tmp}/w", "--config.optim.lrr=1"],
     "unknown config key optim.lrr"),
    (["certify", "{tmp}/missing"], "does not exist"),
    (["certify", "{tmp}"], "not a lipxai run directory"),
    (["certify", "{tmp}", "--eps", "a,b"], "--eps must be comma-separated numbers"),
    (["certify", "{tmp}", "--explanation", "--k", "0"], "argument --k: must be an integer >= 1"),
    (["explain", "{tmp}", "--method", "ig,shap"], "--method takes a comma-separated list of"),
    (["explain", "{tmp}/missing"], "does not exist"),
    (["train", "--config", "configs/mnist_lip.py", "--workdir", "{tmp}/w", "--config.data.data_dir={tmp}"],
     "lipxai prepare-data mnist"),
])
def test_errors_are_one_clear_line(tmp_path, capsys, monkeypatch, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "data_dir" in " ".join(args):
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(REPO)   # the configs' paths are relative to the repository
    out = lipxai_main(capsys, *args)   # an exception (a traceback) fails the test
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert errors and message in errors[-1], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_the_installed_command_exits_with_a_one_line_error(tmp_path):
    out = lipxai("certify", str(tmp_path / "missing"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"lipxai certify: error: workdir {tmp_path / 'missing'} does not exist"]


@pytest.mark.parametrize("command", ["train", "certify", "explain", "evaluate", "quickstart", "prepare-data"])
def test_help_everywhere(command, capsys):
    out = lipxai_main(capsys, command, "--help")
    assert out.returncode == 0 and "usage: lipxai" in out.stdout
