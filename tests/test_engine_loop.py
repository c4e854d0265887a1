"""The training loop with a tiny stand-in model and reader: resume, NaN guard, snapshots, EMA."""
import json

import numpy as np
import paddle
import pytest

from ppdet.core.config import Config
from ppdet.core.errors import CheckpointError, TrainingError
from ppdet.core.workspace import ComponentSpec
from ppdet.engine import Trainer
from ppdet.utils.fileio import load_file


class TinyModel(paddle.nn.Layer):
    """Linear regression whose outputs look like the detector's training outputs."""

    def __init__(self, nan_at_step=None):
        super().__init__()
        self.fc = paddle.nn.Linear(4, 1)
        self.norm = paddle.nn.BatchNorm1D(4)
        self.alias = self.fc          # the same layer under a second name, as in SOLOv2
        self.calls, self.nan_at_step = 0, nan_at_step

    def forward(self, batch):
        pred = self.fc(self.norm(batch['x']))
        loss = ((pred - batch['y']) ** 2).mean()
        if self.calls == self.nan_at_step:
            loss = loss * float('nan')
        self.calls += 1
        return {'loss': loss, 'loss_ins': loss * 0.5, 'loss_cate': loss * 0.5}


class TinyLoader:
    """Eight batches per epoch, order and noise fixed by (epoch, batch), from ``start_batch`` on."""

    def __init__(self):
        rng = np.random.RandomState(0)
        self.x = rng.randn(32, 4).astype('float32')
        self.y = (self.x @ np.array([[1.], [-2.], [0.5], [3.]], 'float32') + 1).astype('float32')
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch

    def __len__(self):
        return 8

    def __iter__(self):
        order = np.random.RandomState(self.epoch).permutation(32)
        for i in range(self.start, 8):
            idx = order[i * 4:(i + 1) * 4]
            noise = np.random.RandomState([self.epoch, i]).randn(4, 1).astype('float32') * 0.01
            yield {'x': paddle.to_tensor(self.x[idx]), 'y': paddle.to_tensor(self.y[idx] + noise)}


def make_cfg(tmp_path, **extra):
    cfg = Config({
        'filename': 'tiny', 'save_dir': str(tmp_path), 'use_gpu': False, 'epoch': 3,
        'log_iter': 1, 'snapshot_epoch': 1, 'seed': 3, 'keep_checkpoint_max': 2,
        'TrainReader': {'batch_size': 4},
        'LearningRate': {'base_lr': 0.05, 'schedulers': [
            ComponentSpec('PiecewiseDecay', {'gamma': 0.1, 'milestones': [2]}),
            ComponentSpec('LinearWarmup', {'start_factor': 0.1, 'steps': 4})]},
        'OptimizerBuilder': {'optimizer': {'type': 'Momentum', 'momentum': 0.9},
                             'regularizer': {'type': 'L2', 'factor': 1e-4}},
    })
    cfg.update(extra)
    return cfg


def run(cfg, resume=None, model=None):
    paddle.seed(0)
    trainer = Trainer(cfg, model=model or TinyModel(), build_loader=lambda c, m: TinyLoader())
    if resume:
        trainer.resume(resume)
    trainer.train()
    return trainer


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_resume_continues_with_the_same_losses(tmp_path):
    full = run(make_cfg(tmp_path / 'a'))
    first = run(make_cfg(tmp_path / 'b', epoch=2))
    assert first.progress.epoch == 0
    resumed_cfg = make_cfg(tmp_path / 'b')
    resumed = run(resumed_cfg, resume=str(tmp_path / 'b' / 'tiny' / '0'))
    assert resumed.progress.epoch == 1
    steps = [r['step'] for r in rows(tmp_path / 'b' / 'tiny' / 'metrics.jsonl')]
    assert steps == list(range(24))              # the rows of the re-run steps are not doubled
    a = [r for r in rows(tmp_path / 'a' / 'tiny' / 'metrics.jsonl') if r['epoch'] == 2]
    b = [r for r in rows(tmp_path / 'b' / 'tiny' / 'metrics.jsonl') if r['epoch'] == 2]
    assert len(a) == 8 and [r['step'] for r in a] == [r['step'] for r in b]
    np.testing.assert_allclose([r['loss'] for r in a], [r['loss'] for r in b], rtol=1e-6)
    np.testing.assert_allclose([r['lr'] for r in a], [r['lr'] for r in b])
    for name, value in full.model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), resumed.model.state_dict()[name].numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_max_iters_stops_mid_epoch_and_resume_finishes_it(tmp_path):
    full = run(make_cfg(tmp_path / 'a', epoch=2))
    stopped = run(make_cfg(tmp_path / 'b', epoch=2, max_iters=11))
    assert stopped.optimizer.state_dict()['LR_Scheduler']['last_epoch'] == 11
    opt = load_file(str(tmp_path / 'b' / 'tiny' / 'model_final.pdopt'))
    assert (opt['last_epoch'], opt['iter_in_epoch'], opt['step']) == (1, 3, 11)
    resumed = run(make_cfg(tmp_path / 'b', epoch=2),
                  resume=str(tmp_path / 'b' / 'tiny' / 'model_final.pdparams'))
    for name, value in full.model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), resumed.model.state_dict()[name].numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_snapshots_keep_the_last_k_and_hold_all_keys(tmp_path):
    run(make_cfg(tmp_path, epoch=4))
    out = tmp_path / 'tiny'
    names = sorted(p.name for p in out.iterdir() if p.suffix == '.pdparams')
    assert names == ['1.pdparams', '2.pdparams', 'model_final.pdparams']
    state = load_file(str(out / 'model_final.pdparams'))
    assert {'fc.weight', 'alias.weight', 'norm._mean'} <= set(state)
    opt = load_file(str(out / 'model_final.pdopt'))
    assert opt['last_epoch'] == 4 and opt['step'] == 32
    assert opt['LR_Scheduler']['last_epoch'] == 32


def test_nan_loss_stops_with_the_iteration_and_keeps_the_snapshot(tmp_path):
    cfg = make_cfg(tmp_path, epoch=3)
    with pytest.raises(TrainingError, match=r'epoch 1 iteration 2: loss is nan'):
        run(cfg, model=TinyModel(nan_at_step=10))
    kept = load_file(str(tmp_path / 'tiny' / '0.pdparams'))
    assert np.isfinite(kept['fc.weight']).all()


def test_nan_policy_skip_steps_over_the_bad_batch(tmp_path):
    trainer = run(make_cfg(tmp_path, epoch=2, nan_policy='skip'), model=TinyModel(nan_at_step=3))
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.state_dict().values())
    assert trainer.optimizer.state_dict()['LR_Scheduler']['last_epoch'] == 16


def test_ema_weights_are_saved_and_raw_weights_kept_apart(tmp_path):
    trainer = run(make_cfg(tmp_path, epoch=2, use_ema=True, ema_decay=0.9))
    out = tmp_path / 'tiny'
    ema = load_file(str(out / 'model_final.pdparams'))
    raw = load_file(str(out / 'model_final.pdema'))
    live = trainer.model.state_dict()
    np.testing.assert_allclose(raw['fc.weight'], live['fc.weight'].numpy())
    assert np.abs(ema['fc.weight'] - raw['fc.weight']).max() > 1e-4
    expected = trainer.ema.apply()['fc.weight'].numpy()
    np.testing.assert_allclose(ema['fc.weight'], expected, rtol=1e-6)


def test_resume_from_a_missing_checkpoint_is_one_clear_error(tmp_path):
    trainer = Trainer(make_cfg(tmp_path), model=TinyModel(),
                      build_loader=lambda c, m: TinyLoader())
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        trainer.resume(str(tmp_path / 'nope' / '3'))


def test_keep_last_k_counts_the_snapshots_of_a_resumed_run(tmp_path):
    run(make_cfg(tmp_path, epoch=3))                      # writes 0, 1, model_final
    run(make_cfg(tmp_path, epoch=5), resume=str(tmp_path / 'tiny' / '1'))
    names = sorted(p.name for p in (tmp_path / 'tiny').iterdir() if p.suffix == '.pdparams')
    assert names == ['2.pdparams', '3.pdparams', 'model_final.pdparams']
