"""A training run SIGKILLed mid-epoch and resumed with -r continues exactly as if never stopped.

The quickstart config on a tiny generated dataset (6 images of 96 px, batch 2, two epochs):
run A goes through uninterrupted with no data workers; run B, with two workers, is killed
during its second epoch, then resumed from its last snapshot.  Every loss row B logs after the
resume equals A's row for the same iteration, and both end with the same weights.
"""
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import train as train_script
from ppdet.utils.cli import run_main
from ppdet.utils.fileio import load_file, save_file

from conftest import ROOT
from fixtures.weight_files import Calls

pytestmark = pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')

TRANSFORMS = ('[{Decode: {}}, {Poly2Mask: {}}, {Resize: {interp: 1, target_size: [96, 96], '
              'keep_ratio: true}}, {RandomFlip: {}}, {NormalizeImage: {is_scale: true, '
              'mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}, {Permute: {}}]')
COMPARED = ('epoch', 'iter', 'step', 'lr', 'loss', 'loss_ins', 'loss_cate')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    from ppdet.data.source.quickstart import generate_quickstart
    folder = str(tmp_path_factory.mktemp('qs') / 'quickstart')
    generate_quickstart(folder, num_train=6, num_val=2, image_size=96, seed=0)
    return folder


def train_args(dataset, save_dir, workers, resume=None):
    options = [f'{section}.dataset_dir={dataset}'
               for section in ('TrainDataset', 'EvalDataset', 'TestDataset')]
    options += ['epoch=2', 'log_iter=1', 'seed=7', f'save_dir={save_dir}', f'worker_num={workers}',
                'TrainReader.batch_size=2', f'TrainReader.sample_transforms={TRANSFORMS}']
    args = ['-c', os.path.join(ROOT, 'configs', 'quickstart.yml'), '-o', *options]
    return args + (['-r', resume] if resume else [])


def train_command(dataset, save_dir, workers, resume=None):
    return [sys.executable, os.path.join(ROOT, 'train.py'),
            *train_args(dataset, save_dir, workers, resume)]


def start(command, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process, timeout=120):
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]


def train_rows(run_dir):
    with open(os.path.join(run_dir, 'metrics.jsonl'), encoding='utf-8') as f:
        return [row for row in map(json.loads, f) if row['type'] == 'train']


def last_snapshot(run_dir):
    epochs = [int(m.group(1)) for m in map(re.compile(r'(\d+)\.pdparams$').match,
                                           os.listdir(run_dir)) if m]
    return os.path.join(run_dir, str(max(epochs)))


def kill_during(process, run_dir, epoch, iteration, timeout=120):
    """SIGKILL the run (and its data workers) once it has logged ``epoch``/``iteration``."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-3000:]
            if os.path.exists(os.path.join(run_dir, 'metrics.jsonl')) and any(
                    (r['epoch'], r['iter']) >= (epoch, iteration) for r in train_rows(run_dir)):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f'the run did not reach epoch {epoch} iteration {iteration}')
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def test_sigkill_mid_epoch_then_resume_gives_the_same_losses(dataset, tmp_path):
    run_a, run_b = tmp_path / 'a', tmp_path / 'b'
    uninterrupted = start(train_command(dataset, run_a, workers=0), tmp_path)
    interrupted = start(train_command(dataset, run_b, workers=2), tmp_path)
    b_dir = str(run_b / 'quickstart')
    kill_during(interrupted, b_dir, epoch=1, iteration=1)
    before_kill = train_rows(b_dir)
    snapshot = last_snapshot(b_dir)
    assert os.path.basename(snapshot) == '0'
    assert not os.path.exists(os.path.join(b_dir, 'model_final.pdparams'))

    finish(start(train_command(dataset, run_b, workers=2, resume=snapshot), tmp_path))
    finish(uninterrupted)

    reference = {(r['epoch'], r['iter']): [r[k] for k in COMPARED]
                 for r in train_rows(str(run_a / 'quickstart'))}
    assert len(reference) == 6
    # the resumed run drops the rows after its snapshot and logs them again
    rows_b = train_rows(b_dir)
    assert [(r['epoch'], r['iter']) for r in rows_b] == sorted(reference)
    for row in before_kill + rows_b:
        assert [row[k] for k in COMPARED] == reference[(row['epoch'], row['iter'])], row

    final_a = load_file(str(run_a / 'quickstart' / 'model_final.pdparams'))
    final_b = load_file(os.path.join(b_dir, 'model_final.pdparams'))
    assert list(final_a) == list(final_b)
    for key in final_a:
        np.testing.assert_array_equal(final_b[key], final_a[key], err_msg=key)


@pytest.mark.parametrize('damage', ['truncated', 'malicious'])
def test_resume_from_a_bad_checkpoint_is_one_error_line(dataset, tmp_path, damage, monkeypatch,
                                                        capsys, fresh_logger):
    snapshot = tmp_path / 'snapshot'
    if damage == 'truncated':
        save_file({'w': np.zeros(1000, np.float32)}, str(snapshot) + '.pdparams')
        data = (tmp_path / 'snapshot.pdparams').read_bytes()
        (tmp_path / 'snapshot.pdparams').write_bytes(data[:len(data) // 2])
    else:
        (tmp_path / 'snapshot.pdparams').write_bytes(pickle.dumps(
            {'w': Calls(os.system, 'touch pwned')}, protocol=4))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_main(train_script.main, train_args(dataset, tmp_path / 'out', workers=0,
                                               resume=str(snapshot)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert stop.value.code == 2 and 'Traceback' not in err, err[-3000:]
    assert len(lines) == 1 and 'snapshot.pdparams' in lines[0], err[-3000:]
    assert ('truncated' if damage == 'truncated' else 'posix.system') in lines[0]
    assert not (tmp_path / 'pwned').exists()
