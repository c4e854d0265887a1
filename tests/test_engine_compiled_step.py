"""The training step with its forward compiled gives the eager step's losses and parameters."""
import copy
import os

import numpy as np
import paddle
import pytest

from conftest import ROOT
from ppdet.core.config import load_config
from ppdet.core.errors import ConfigError
from ppdet.core.workspace import create
from ppdet.data import build_dataset, build_loader, generate_quickstart
from ppdet.engine import Trainer, TrainStep
from ppdet.engine.compiled_step import CompiledStep

SIZE = 96


@pytest.fixture(scope='module')
def batches(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('qs') / 'quickstart')
    generate_quickstart(folder, num_train=12, num_val=1, image_size=SIZE, seed=3)
    cfg = quickstart_config(folder)
    loader = build_loader(cfg, 'train', build_dataset(cfg, 'train'), num_workers=0)
    loader.set_epoch(0)
    return cfg, list(loader)


def quickstart_config(folder):
    cfg = load_config(os.path.join(ROOT, 'configs', 'quickstart.yml'))
    for key in ('TrainDataset', 'EvalDataset'):
        cfg[key]['dataset_dir'] = folder
    for op in cfg['TrainReader']['sample_transforms']:
        if 'Resize' in op:
            op['Resize']['target_size'] = [SIZE, SIZE]
    cfg['TrainReader']['shuffle'] = False
    return cfg


class _Constant:
    """A learning-rate schedule that stays put."""

    def step(self):
        pass


def train(cfg, batches, compiled):
    paddle.seed(0)
    model = create(cfg.architecture, cfg)
    optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9,
                                          parameters=model.parameters())
    step = TrainStep(CompiledStep(compiled).forward_of(model), optimizer, _Constant())
    model.train()
    losses = [step(batch) for batch in batches]
    return losses, {k: v.numpy() for k, v in model.state_dict().items()}


def test_compiled_step_matches_the_eager_step(batches):
    cfg, data = batches
    assert len(data) == 3 and len({b['ins_label'][1].shape[1] for b in data}) > 1  # re-traced
    eager_losses, eager_params = train(cfg, data, compiled=False)
    translated = translations()
    compiled_losses, compiled_params = train(cfg, data, compiled=True)
    assert translations() > translated          # really run as a translated program
    for ours, theirs in zip(compiled_losses, eager_losses):
        assert ours.keys() == theirs.keys() == {'loss', 'loss_ins', 'loss_cate'}
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4)
    assert eager_losses[0] != eager_losses[-1]
    for key, value in eager_params.items():
        scale = max(np.abs(value).max(), 1e-3)
        np.testing.assert_allclose(compiled_params[key], value, rtol=0, atol=1e-4 * scale,
                                   err_msg=key)


def translations():
    from paddle.jit.sot.opcode_translator.executor.executor_cache import OpcodeExecutorCache
    return OpcodeExecutorCache().translate_count


class _Diverged(paddle.nn.Layer):
    """A model whose loss is NaN: the step must leave its weights alone."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(2, 1)

    def forward(self, batch):
        loss = self.fc(batch['x']).sum() * float('nan')
        return {'loss': loss, 'loss_x': loss}


def test_a_non_finite_loss_changes_no_parameter():
    model = _Diverged()
    before = model.fc.weight.numpy().copy()
    optimizer = paddle.optimizer.SGD(learning_rate=1., parameters=model.parameters())
    step = TrainStep(CompiledStep(enabled=True).forward_of(model), optimizer, _Constant())
    values = step({'x': paddle.ones([3, 2])})
    assert np.isnan(values['loss']) and np.isnan(values['loss_x'])
    np.testing.assert_array_equal(model.fc.weight.numpy(), before)


def test_config_section_chooses_the_forward(tmp_path):
    model = _Diverged()
    base = os.path.join(ROOT, 'configs', 'quickstart.yml')
    assert create('CompiledStep', load_config(base)).forward_of(model) is model
    path = tmp_path / 'compiled.yml'
    path.write_text(f"_BASE_: ['{base}']\nCompiledStep: {{enabled: true}}\n")
    forward = create('CompiledStep', load_config(str(path))).forward_of(model)
    assert forward is not model and forward.model is model      # the model stays eager
    path.write_text(f"_BASE_: ['{base}']\nCompiledStep: {{enable: true}}\n")
    with pytest.raises(ConfigError, match='enabled'):
        load_config(str(path))


def test_the_trainer_steps_through_the_configured_forward(batches, tmp_path, monkeypatch):
    cfg = copy.deepcopy(batches[0])
    cfg.update({'save_dir': str(tmp_path), 'max_iters': 1, 'CompiledStep': {'enabled': True}})
    called = []

    def forward_of(self, model):
        called.append(self.enabled)
        return model
    monkeypatch.setattr(CompiledStep, 'forward_of', forward_of)
    Trainer(cfg, mode='train').train()
    assert called == [True]
