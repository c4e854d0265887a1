"""The engine's parts on their own: the loop with a stand-in step, hooks that only watch, the
Checkpointer's EMA swap and resume, the training step's non-finite guard, and evaluation and
inference fed by an injected detector."""
import contextlib
import dataclasses
import json
import os

import numpy as np
import paddle
import pytest

from ppdet.core.config import load_config, merge_overrides
from ppdet.core.errors import TrainingError
from ppdet.data import generate_quickstart
from ppdet.engine import Checkpointer, Trainer, TrainingLoop, TrainStep
from ppdet.engine.callbacks import Callback, EarlyStopping
from ppdet.engine.state import Progress, StepState, TrainPlan
from ppdet.optimizer import ModelEMA
from ppdet.utils.fileio import load_file

from conftest import ROOT


# ---------------------------------------------------------------------------- the loop

class CountingStep:
    """Stands in for TrainStep: records its batches; the loss is the number of calls."""
    lr = 0.25

    def __init__(self, bad_at=None):
        self.batches, self.bad_at = [], bad_at

    def __call__(self, batch):
        self.batches.append(batch)
        loss = float('nan') if len(self.batches) == self.bad_at else float(len(self.batches))
        return {'loss': loss}


class PairLoader:
    """``(epoch, batch index)`` pairs from ``set_epoch``'s start batch on."""

    def __init__(self, batches):
        self.batches, self.epoch, self.start = batches, 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch

    def __len__(self):
        return self.batches - self.start

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.start, self.batches)])


class Recorder(Callback):
    def __init__(self, events):
        self.events = events

    def on_train_begin(self, start):
        self.events.append(('begin', start))

    def on_step_end(self, state):
        self.events.append(('step', state))

    def on_snapshot(self, snapshot):
        self.events.append(('snapshot', snapshot))

    def on_eval_end(self, snapshot, metrics):
        self.events.append(('eval', metrics))

    def on_train_end(self):
        self.events.append(('end', None))


def plan(epochs=3, steps=4, **kwargs):
    return TrainPlan(epochs, steps, epochs * steps, 'runs/x', **kwargs)


def test_hooks_see_typed_read_only_state_in_order():
    events = []

    @contextlib.contextmanager
    def snapshot_weights():
        events.append(('swap in', None))
        yield
        events.append(('swap out', None))

    step = CountingStep()
    loop = TrainingLoop(step, PairLoader(4), plan(snapshot_epoch=2), [Recorder(events)],
                        snapshot_weights, evaluate=lambda: {'segm_AP': 0.5})
    loop.run(Progress(seed=3))
    kinds = [kind for kind, _ in events]
    assert kinds == (['begin'] + ['step'] * 8 + ['swap in', 'snapshot', 'eval', 'swap out']
                     + ['step'] * 4 + ['swap in', 'snapshot', 'eval', 'swap out', 'end'])
    states = [value for kind, value in events if kind == 'step']
    assert all(isinstance(s, StepState) for s in states)
    assert [(s.epoch, s.iter, s.step) for s in states[3:6]] == [(0, 3, 3), (1, 0, 4), (1, 1, 5)]
    assert [s.losses['loss'] for s in states] == [float(i) for i in range(1, 13)]
    assert all(s.lr == 0.25 and s.eta >= 0 for s in states)
    with pytest.raises(dataclasses.FrozenInstanceError):
        states[0].step = 99
    first, final = [value for kind, value in events if kind == 'snapshot']
    assert (first.epoch, first.final, first.resume_point()) == (1, False, Progress(2, 0, 8, 3))
    assert (final.epoch, final.final, final.step) == (2, True, 11)
    assert step.batches[8] == (2, 0)


def test_a_hook_ends_the_run_by_asking_not_by_changing_the_loop():
    events = []
    stopper = EarlyStopping(patience=1)
    scores = iter([0.3, 0.2, 0.9])
    loop = TrainingLoop(CountingStep(), PairLoader(2), plan(epochs=5, steps=2),
                        [Recorder(events), stopper], evaluate=lambda: {'segm_AP': next(scores)})
    loop.run(Progress())
    snapshots = [value for kind, value in events if kind == 'snapshot']
    assert [s.epoch for s in snapshots] == [0, 1] and stopper.stop_requested
    assert sum(kind == 'step' for kind, _ in events) == 4


def test_the_loop_goes_on_from_a_resume_point():
    step, events = CountingStep(), []
    TrainingLoop(step, PairLoader(4), plan(epochs=2), [Recorder(events)]).run(
        Progress(epoch=1, iter=2, step=6, seed=5))
    assert step.batches == [(1, 2), (1, 3)]
    states = [value for kind, value in events if kind == 'step']
    assert [(s.epoch, s.iter, s.step) for s in states] == [(1, 2, 6), (1, 3, 7)]
    assert events[0] == ('begin', Progress(1, 2, 6, 5))


def test_a_non_finite_loss_stops_the_run_or_is_skipped_as_the_plan_says(caplog):
    with pytest.raises(TrainingError, match=r'runs/x: training stopped at epoch 1 iteration 1: '
                                            r'loss is nan; the last snapshot in runs/x'):
        TrainingLoop(CountingStep(bad_at=6), PairLoader(4), plan(), []).run(Progress())
    step = CountingStep(bad_at=6)
    TrainingLoop(step, PairLoader(4), plan(skip_non_finite=True), []).run(Progress())
    assert len(step.batches) == 12


# ---------------------------------------------------------------------------- the step

class Regression(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(3, 1)
        self.poison = False

    def forward(self, batch):
        loss = ((self.fc(batch['x']) - batch['y']) ** 2).mean()
        return {'loss': loss * float('nan') if self.poison else loss}


def regression_parts(seed=0):
    paddle.seed(seed)
    model = Regression()
    schedule = paddle.optimizer.lr.PiecewiseDecay([100], [0.1, 0.01])
    optimizer = paddle.optimizer.Momentum(schedule, 0.9, parameters=model.parameters())
    ema = ModelEMA(model, 0.5)
    return model, optimizer, schedule, ema


def regression_batch(i):
    rng = np.random.RandomState(i)
    x = rng.randn(8, 3).astype('float32')
    return {'x': paddle.to_tensor(x), 'y': paddle.to_tensor(x.sum(1, keepdims=True))}


def weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_a_non_finite_loss_applies_no_update_but_the_schedule_and_ema_advance():
    model, optimizer, schedule, ema = regression_parts()
    step = TrainStep(model, optimizer, schedule, ema)
    step(regression_batch(0))
    before = weights(model)
    model.poison = True
    losses = step(regression_batch(1))
    assert np.isnan(losses['loss'])
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, before[key])
    assert schedule.last_epoch == 2 and ema.step == 2


# ---------------------------------------------------------------------------- checkpoints

def test_checkpointer_saves_ema_weights_and_resumes_the_raw_ones(tmp_path):
    model, optimizer, schedule, ema = regression_parts()
    step = TrainStep(model, optimizer, schedule, ema)
    for i in range(5):
        step(regression_batch(i))
    raw = weights(model)
    checkpointer = Checkpointer(model, str(tmp_path), optimizer, ema)
    progress = Progress(epoch=1, iter=2, step=5, seed=11)
    checkpointer.save('outside', progress)
    with checkpointer.evaluated_weights():
        averaged = weights(model)
        with checkpointer.evaluated_weights():           # nested: still the average
            checkpointer.save('inside', progress)
    for key, value in weights(model).items():          # the raw weights are back
        np.testing.assert_array_equal(value, raw[key])
    assert np.abs(averaged['fc.weight'] - raw['fc.weight']).max() > 1e-4
    for ext in ('.pdparams', '.pdema', '.pdopt'):
        a, b = load_file(str(tmp_path / f'outside{ext}')), load_file(str(tmp_path / f'inside{ext}'))
        assert list(a) == list(b)
    saved = load_file(str(tmp_path / 'outside.pdparams'))
    np.testing.assert_array_equal(saved['fc.weight'], averaged['fc.weight'])
    opt = load_file(str(tmp_path / 'outside.pdopt'))
    assert 'fc.weight_velocity_0' in opt and opt['iter_in_epoch'] == 2

    other, other_opt, other_schedule, other_ema = regression_parts(seed=1)
    resumed = Checkpointer(other, str(tmp_path), other_opt, other_ema).resume(
        str(tmp_path / 'outside'), steps_per_epoch=4, seed=0)
    assert resumed == progress
    for key, value in weights(other).items():
        np.testing.assert_array_equal(value, raw[key])
    # the EMA goes on from the saved averages after the schedule's count (the reference's way)
    np.testing.assert_array_equal(other_ema.state['fc.weight'].numpy(), averaged['fc.weight'])
    assert other_ema.step == other_schedule.last_epoch == schedule.last_epoch == 5
    assert Checkpointer(model, str(tmp_path)).saved_epochs() == []


# ---------------------------------------------------------------------------- detectors

SCORE = 0.77


class BoxDetector:
    """Stands in for an exported runner: one square detection of class 1 per image, at the
    image's original size; it reports no threshold counts."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image, im_shape, scale_factor):
        self.calls += 1
        sizes = np.round(im_shape.numpy() / scale_factor.numpy()).astype(int)
        h, w = sizes.max(0)
        segm = np.zeros((len(sizes), h, w), np.uint8)
        segm[:, 8:40, 8:40] = 1
        box = [1, SCORE, 8, 8, 40, 40]
        return {'segm': segm, 'cate_label': np.ones(len(sizes), np.int64),
                'cate_score': np.full(len(sizes), SCORE, np.float32),
                'bbox': np.array([box] * len(sizes), np.float32),
                'bbox_num': np.ones(len(sizes), np.int32)}


@pytest.fixture(scope='module')
def small_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp('qs') / 'quickstart'
    generate_quickstart(str(folder), num_train=2, num_val=3, image_size=64, seed=0)
    cfg = load_config(os.path.join(ROOT, 'configs', 'quickstart.yml'))
    merge_overrides(cfg, [f'{key}.dataset_dir={folder}'
                          for key in ('TrainDataset', 'EvalDataset', 'TestDataset')]
                    + ['worker_num=0', f'save_dir={tmp_path_factory.mktemp("out")}'])
    return cfg, folder


def test_evaluation_takes_its_detections_from_the_injected_detector(small_config, tmp_path):
    cfg, _ = small_config
    detector = BoxDetector()
    results = Trainer(cfg, mode='eval', detector=detector).evaluate(output_eval=str(tmp_path))
    records = json.loads((tmp_path / 'segm.json').read_text())
    assert detector.calls == 3 and len(records) == 3
    assert [r['score'] for r in records] == pytest.approx([SCORE] * 3)
    assert {r['category_id'] for r in records} == {2}          # class 1 of the file's list
    assert 'segm_AP' in results


def test_inference_takes_its_detections_from_the_injected_detector(small_config, tmp_path,
                                                                    ppdet_log):
    cfg, folder = small_config
    trainer = Trainer(cfg, mode='test', detector=BoxDetector())
    records = trainer.predict(str(folder / 'val'), output_dir=str(tmp_path),
                              save_results=True, draw_threshold=0.5)
    drawn = sorted(p.name for p in tmp_path.iterdir() if p.suffix == '.png')
    assert drawn == sorted(os.listdir(folder / 'val'))
    assert [r['image_id'] for r in records['segm']] == [0, 1, 2]
    written = json.loads((tmp_path / 'bbox.json').read_text())
    assert [r['bbox'] for r in written] == [[8.0, 8.0, 32.0, 32.0]] * 3
    assert '3 images: 3 detections; 3 drawn, 0 below draw_threshold 0.5' in \
        [r.getMessage() for r in ppdet_log]
