"""The training loop with a tiny stand-in model and reader: resume, NaN guard, snapshots, EMA."""
import json

import numpy as np
import paddle
import pytest

from ppdet.core.errors import CheckpointError, TrainingError
from ppdet.engine import Trainer
from ppdet.utils.fileio import load_file

from fixtures.tiny_training import TinyLoader, TinyModel, make_cfg, train_tiny


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_resume_continues_with_the_same_losses(tmp_path):
    full = train_tiny(make_cfg(tmp_path / 'a'))
    first = train_tiny(make_cfg(tmp_path / 'b', epoch=2))
    assert first.progress.epoch == 0
    resumed_cfg = make_cfg(tmp_path / 'b')
    resumed = train_tiny(resumed_cfg, resume=str(tmp_path / 'b' / 'tiny' / '0'))
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
    full = train_tiny(make_cfg(tmp_path / 'a', epoch=2))
    stopped = train_tiny(make_cfg(tmp_path / 'b', epoch=2, max_iters=11))
    assert stopped.optimizer.state_dict()['LR_Scheduler']['last_epoch'] == 11
    opt = load_file(str(tmp_path / 'b' / 'tiny' / 'model_final.pdopt'))
    assert (opt['last_epoch'], opt['iter_in_epoch'], opt['step']) == (1, 3, 11)
    resumed = train_tiny(make_cfg(tmp_path / 'b', epoch=2),
                  resume=str(tmp_path / 'b' / 'tiny' / 'model_final.pdparams'))
    for name, value in full.model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), resumed.model.state_dict()[name].numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_snapshots_keep_the_last_k_and_hold_all_keys(tmp_path):
    train_tiny(make_cfg(tmp_path, epoch=4))
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
        train_tiny(cfg, model=TinyModel(nan_at_step=10))
    kept = load_file(str(tmp_path / 'tiny' / '0.pdparams'))
    assert np.isfinite(kept['fc.weight']).all()


def test_nan_policy_skip_steps_over_the_bad_batch(tmp_path):
    trainer = train_tiny(make_cfg(tmp_path, epoch=2, nan_policy='skip'),
                         model=TinyModel(nan_at_step=3))
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.state_dict().values())
    assert trainer.optimizer.state_dict()['LR_Scheduler']['last_epoch'] == 16


def test_ema_weights_are_saved_and_raw_weights_kept_apart(tmp_path):
    trainer = train_tiny(make_cfg(tmp_path, epoch=2, use_ema=True, ema_decay=0.9))
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
    train_tiny(make_cfg(tmp_path, epoch=3))                      # writes 0, 1, model_final
    train_tiny(make_cfg(tmp_path, epoch=5), resume=str(tmp_path / 'tiny' / '1'))
    names = sorted(p.name for p in (tmp_path / 'tiny').iterdir() if p.suffix == '.pdparams')
    assert names == ['2.pdparams', '3.pdparams', 'model_final.pdparams']
