"""``lipxai quickstart``: train a run, then certify, explain, evaluate and report it.

The data flow goes one way: the run is trained, loaded, its test split read once and its
model exported once (:class:`lipxai.train.rundir.Run`); the apps compute their results from
``(run.apply, x, labels)``; :mod:`lipxai.apps.report` writes them.
"""

from __future__ import annotations

import os
import time

from lipxai import data
from lipxai.apps import certify, explain, evaluate, report
from lipxai.apps.names import QUICKSTART_CONFIG
from lipxai.train import rundir, train
from lipxai.train.config import ConfigError

#: Images in the quickstart's explanation figure.
EXPLAIN_IMAGES = 8


def default_config() -> str:
    """``configs/mnist_lip.py`` of the working directory or of the repository holding lipxai."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join("configs", QUICKSTART_CONFIG),
                      os.path.join(here, os.pardir, os.pardir, "configs", QUICKSTART_CONFIG)):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"configs/{QUICKSTART_CONFIG} not found: run from the lipxai repository or pass --config")


def prepare_if_missing(name: str, data_dir) -> None:
    """First run on a new machine: download and prepare the dataset with tensorflow-datasets."""
    try:
        data.load_split(name, "test", data_dir=data_dir)
    except data.DatasetNotFoundError:
        print(f"{name} is not prepared yet: downloading and preparing it with tensorflow-datasets",
              flush=True)  # stdout: stderr is left to a failure's one line
        data.prepare(name, data_dir=data_dir)


def average_images_per_sec(records, batch_size: int) -> float | None:
    """The training throughput of a whole run from its ``train`` records of ``metrics.jsonl``
    (each the rate of the window of steps since the previous one): images over seconds,
    summed over the windows; ``None`` without records."""
    images = seconds = 0.0
    previous = 0
    for record in sorted(records, key=lambda r: r["step"]):
        window = (record["step"] - previous) * batch_size
        images, seconds = images + window, seconds + window / record["images_per_sec"]
        previous = record["step"]
    return images / seconds if seconds else None


def quickstart(config, workdir: str, *, config_name: str) -> str:
    """Train ``config`` in ``workdir`` (resuming), then write ``certify.json``,
    ``explanations.png``, ``evaluate.*`` (with a ``config.evaluate`` section) and
    ``report.md``, printing the tables; ``config_name`` (the config file and its overrides)
    is named in the report.  Returns the report's path."""
    prepare_if_missing(config.data.name, config.data.data_dir or None)
    start = time.perf_counter()
    train(config, workdir)
    seconds = time.perf_counter() - start
    run = rundir.load_run(workdir)
    x, labels = run.split("test")

    certificates = certify.certificates(run.apply, x, labels, eps=tuple(config.certify.eps),
                                        lipschitz=certify.lipschitz_bound(run))
    certificates.update(split="test", step=run.step)
    print(report.certify_table(certificates))
    report.write_certify_json(certificates, workdir)

    figure = explain.explanations(run.apply, x[:EXPLAIN_IMAGES], labels[:EXPLAIN_IMAGES])
    report.plot_explanations(os.path.join(workdir, "explanations.png"), figure)

    evaluation = None
    if "evaluate" in config:
        ev = config.evaluate
        if not 1 <= ev.n <= len(x):
            raise ConfigError(f"evaluate.n must be in [1, {len(x)}] (the size of the test split), got {ev.n}")
        evaluation = evaluate.evaluation(run.apply, x[:ev.n], tuple(ev.methods), tuple(ev.metrics),
                                         samples=ev.samples, progress=True)
        print(report.metrics_table(evaluation))
        report.write_evaluation(evaluation, workdir)

    train_records = run.metrics("train")
    training = dict(config=config_name, steps=run.step, seconds=seconds,
                    loss=train_records[-1]["loss"] if train_records else None,
                    images_per_sec=average_images_per_sec(train_records, config.train.batch_size))
    return report.write_quickstart_report(workdir, training=training, certificates=certificates,
                                          images=x[:len(certificates["examples"]["prediction"])],
                                          explanations=True, evaluation=evaluation)
