"""Training: objectives (a task loss plus weighted terms, :func:`objective`), train state, jitted
data-parallel steps, orbax checkpoints, the loop and the run directories it writes
(:class:`Run`, :func:`load_run`)."""

from lipxai.train.baseline import fit_cross_entropy
from lipxai.train import objectives
from lipxai.train.build import build_loss, build_model, build_objective, build_optimizer
from lipxai.train.loop import TrainingDivergedError, train
from lipxai.train.rundir import Run, RunNotFoundError, load_run
from lipxai.train.sharding import data_mesh
from lipxai.train.state import TrainState, init_state
from lipxai.train.objectives import objective
from lipxai.train.step import make_objective_step, make_predict, make_train_step
from lipxai.train.validate import validate_config

__all__ = [
           "Run",
           "RunNotFoundError",
           "TrainState",
           "TrainingDivergedError",
           "build_loss",
           "build_model",
           "build_objective",
           "build_optimizer",
           "data_mesh",
           "fit_cross_entropy",
           "init_state",
           "load_run",
           "make_objective_step",
           "make_predict",
           "make_train_step",
           "objective",
           "objectives",
           "train",
           "validate_config",
]
