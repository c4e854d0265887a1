"""``paddle.distributed.launch`` with two processes on this machine: one download of the
pretrained weights serves both ranks, the ranks train identical weights, and rank 0 evaluates
and saves."""
import os
import subprocess
import sys

import numpy as np

from ppdet.modeling.backbones.resnet import ResNet
from ppdet.utils import download

from conftest import ROOT
from fixtures.quickstart_run import metric_rows, write_config
from fixtures.weights_server import weights_file

RANK_VARIABLES = ('PADDLE_LOCAL_RANK', 'PADDLE_RANK_IN_NODE', 'LOCAL_RANK')


def test_two_processes_download_once_and_train_identical_ranks(tmp_path, weights_server,
                                                               quickstart_data):
    backbone = ResNet(depth=18, num_stages=3, return_idx=[0, 1, 2], freeze_at=-1,
                      freeze_norm=False)                  # configs/quickstart.yml's
    name = 'ResNet18_pretrained.pdparams'
    weights_server.files[name] = weights_file(backbone, tmp_path / 'r18.pdparams')
    weights_server.delay = 0.01    # about 7 s: the second rank starts while the first downloads
    cfg = write_config(tmp_path, quickstart_data)
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    env[download.CACHE_ENV] = str(tmp_path / 'cache')
    proc = subprocess.run(
        [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
         '--log_dir', str(tmp_path / 'log'), os.path.join('tests', 'fixtures', 'launch_train.py'),
         str(tmp_path), '-c', cfg, '--eval', '-o', 'epoch=1',
         f'pretrain_weights={weights_server.url(name)}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = ''.join(p.read_text() for p in sorted((tmp_path / 'log').glob('workerlog.*')))
    assert proc.returncode == 0, logs[-3000:]

    assert len(weights_server.requests) == 1
    assert f'{name}: loaded {len(backbone.state_dict())} tensors' in logs
    assert os.listdir(tmp_path / 'cache') == [name]

    a, b = np.load(tmp_path / 'rank0.npz'), np.load(tmp_path / 'rank1.npz')
    assert set(a.files) == set(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    out = tmp_path / 'out' / 'tiny'
    assert (out / 'best_model.pdparams').is_file()
    assert len(metric_rows(out / 'metrics.jsonl', 'train')) == 1      # 8 images / 2 ranks / 4
