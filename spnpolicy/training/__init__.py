"""The shared training stack: vectorised envs, runner, replay buffer, target updates,
seeding, evaluation, logging, checkpoints, progress, and the run session tying them up."""

from spnpolicy.training.buffer import Batch, ReplayBuffer
from spnpolicy.training.checkpoint import load_checkpoint, save_checkpoint
from spnpolicy.training.evaluation import EVAL_SEED_OFFSET, evaluate, evaluate_run
from spnpolicy.training.hindsight import Hindsight
from spnpolicy.training.logger import MetricsLogger
from spnpolicy.training.metrics import TrainingMeans, UpdateMeans
from spnpolicy.training.nstep import NStepAccumulator, NStepTransition
from spnpolicy.training.progress import ProgressBar
from spnpolicy.training.runner import Episode, Runner, Transition
from spnpolicy.training.seeding import get_rng_state, seed_everything, set_rng_state
from spnpolicy.training.session import RunSpec, Session
from spnpolicy.training.stream import TransitionStream
from spnpolicy.training.targets import Polyak, hard_update, make_target, soft_update
from spnpolicy.training.vec_env import CoverageVec, ParallelEnvVec, VecEnv, VecStep, make_vec_env

__all__ = ["Batch", "CoverageVec", "EVAL_SEED_OFFSET", "Episode", "Hindsight", "MetricsLogger",
           "NStepAccumulator", "NStepTransition", "ParallelEnvVec", "Polyak", "ProgressBar",
           "ReplayBuffer", "RunSpec", "Runner", "Session", "TrainingMeans", "Transition",
           "TransitionStream", "UpdateMeans", "VecEnv", "VecStep",
           "evaluate", "evaluate_run", "get_rng_state", "hard_update", "load_checkpoint",
           "make_target", "make_vec_env", "save_checkpoint", "seed_everything", "set_rng_state",
           "soft_update"]
