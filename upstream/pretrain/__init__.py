"""``python -m upstream.pretrain``: self-supervised pre-training of an upstream on unlabelled audio.

    python -m upstream.pretrain -u apc -c recipes/pretrain/apc_tiny.yaml -n apc_tiny \\
        --data ../shared/data/unlabeled --data ../shared/data/speech_commands_fsdd [-o train.total_steps=2000]

The experiment folder ``<expdir>/<name>/`` holds ``config.yaml``, ``checkpoints/last.pt`` (model,
optimiser, schedule, RNG and position: re-running the command resumes there), ``upstream.pt`` (the
model in the format ``run_downstream.py -u NAME -k upstream.pt`` loads), ``curve.tsv`` (step,
train loss, validation loss, learning rate, training seconds without validation and saving, the
model's own statistics), TensorBoard events in ``tb/``, ``train.log``
and ``summary.json``; recordings the data could not use are listed in ``skipped.tsv``. A few
utterances (``train.valid_fraction``, chosen by a hash of their ids) are held out for the validation
loss. The loop is :class:`core.training.TrainingLoop`, the one downstream training runs on; all
writes of checkpoints are atomic.

Devices: ``--device auto`` (default) trains on a GPU when CUDA has one, else on the CPU; ``cpu``,
``cuda`` and ``cuda:N`` choose. Target stages (k-means features, BEST-RQ statistics) run before the
model moves there. Data-parallel: ``torchrun --nproc_per_node N -m upstream.pretrain ...`` splits
every batch over N processes, one GPU each where there are GPUs (:mod:`core.distributed`);
process 0 computes the targets, validates and writes everything. Masks are drawn per process, so
such a run matches one process statistically, not bitwise.

The ``augment`` section (:class:`upstream.pretrain.augment.AugmentConfig`, off by default) augments the
training batches on the fly (band-reject filtering, reverberation, additive noise), never the
validation audio; ``summary.json`` records its settings and how many utterances each transform
changed (under torchrun: process 0's share of the batches).

Modules: :mod:`.trainer` (:class:`Pretrainer`, the configs, the run folder's names and the finished /
unfinished tests), :mod:`.cli` (:func:`main`), :mod:`.augment` (the ``augment`` section's transforms),
and two diagnostics of a run, each a command of its own: :mod:`.target_quality` (how phonetic the
discrete targets are) and :mod:`.layer_stats` (how each hidden layer spreads its frames). The objectives
themselves belong to the models (``pretrain_loss`` of :class:`upstream.base.Pretrainable`; HuBERT's
k-means target stages in :mod:`upstream.hubert.targets`), so this package sits above them and none of
them imports it.
"""
from core.runs import RESUME_CHECKPOINT, SUMMARY_FILE, pretraining_finished, unfinished_run_checkpoint

from .cli import main
from .trainer import (
    PretrainConfig,
    Pretrainer,
    PretrainLoopConfig,
    PretrainObjective,
    held_out,
    lr_factor,
    resolve_pretrain_config,
)

__all__ = ["RESUME_CHECKPOINT", "SUMMARY_FILE", "PretrainConfig", "PretrainLoopConfig", "PretrainObjective",
           "Pretrainer", "held_out", "lr_factor", "main", "pretraining_finished", "resolve_pretrain_config",
           "unfinished_run_checkpoint"]
