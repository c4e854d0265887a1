"""tools/plot_curves.py on a synthetic metrics.jsonl in the documented row format."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'tools'))
plot_curves = pytest.importorskip('plot_curves')
pytest.importorskip('matplotlib')

from ppdet.core.errors import ConfigError, DataError  # noqa: E402

EPOCHS, ITERS, LOG_ITER = 3, 20, 5
SECONDS_PER_STEP = 0.5
ETA_FACTOR = 0.8            # the logged ETA promises 20 % less time than the run took
SEGM_AP = [0.10, 0.30, 0.25]


def _rows():
    total = EPOCHS * ITERS
    for epoch in range(EPOCHS):
        for it in range(0, ITERS, LOG_ITER):
            step = epoch * ITERS + it
            yield {'type': 'train', 'epoch': epoch, 'iter': it, 'step': step,
                   'lr': 0.01 * (0.1 if epoch == 2 else 1), 'loss': 3.0 / (1 + step),
                   'loss_ins': 2.0 / (1 + step), 'loss_cate': 1.0 / (1 + step),
                   'batch_time': SECONDS_PER_STEP, 'data_time': 0.05,
                   'time': 1000. + step * SECONDS_PER_STEP,
                   'eta': ETA_FACTOR * (total - step) * SECONDS_PER_STEP}
        yield {'type': 'eval', 'epoch': epoch, 'step': (epoch + 1) * ITERS - 1,
               'segm_AP': SEGM_AP[epoch], 'bbox_AP': SEGM_AP[epoch] + 0.05}
    yield {'type': 'train', 'epoch': EPOCHS - 1, 'iter': ITERS, 'step': total, 'lr': 0.001,
           'loss': 0.05, 'loss_ins': 0.03, 'loss_cate': 0.02, 'batch_time': SECONDS_PER_STEP,
           'data_time': 0.05, 'time': 1000. + total * SECONDS_PER_STEP, 'eta': 0.}


@pytest.fixture
def run_dir(tmp_path):
    with open(tmp_path / 'metrics.jsonl', 'w') as f:
        for row in _rows():
            f.write(json.dumps(row) + '\n')
    return tmp_path


def test_plot_has_one_subplot_per_key_and_summary(run_dir, capsys):
    out = run_dir / 'curves.png'
    plot_curves.main([str(run_dir), '--keys', 'loss,lr,segm_AP'])
    text = capsys.readouterr().out
    assert out.is_file()

    import matplotlib.image as mpimg
    image = mpimg.imread(str(out))[..., :3]
    assert image.shape[:2] == (round((1.8 * 3 + 0.6) * 80), 7 * 80)
    # Matplotlib's first line colour (C0) must appear in each third of the figure.
    c0 = np.array([0x1f, 0x77, 0xb4]) / 255
    line = np.abs(image - c0).max(axis=2) < 0.05
    bands = np.array_split(line.any(axis=1), 3)
    assert all(band.any() for band in bands), [band.sum() for band in bands]

    assert 'best segm_AP 0.3000 at epoch 1' in text
    assert 'time per iteration: 0.5000 s (data 0.0500 s)' in text
    # ETA 20 % short everywhere: at half of the run 15 s predicted, 15 / 0.8 left in reality.
    assert 'ETA at 50% of the run (step 30): 12 s left, really 15 s (-3 s, -20%)' in text


def test_default_keys_skip_what_the_run_lacks(run_dir):
    metrics = plot_curves.read_metrics(str(run_dir))
    metrics.eval = [{'type': 'eval', 'epoch': 0, 'step': 19}]     # nothing predicted yet
    assert plot_curves.choose_keys(metrics, None) == ['loss', 'loss_ins', 'loss_cate', 'lr']
    assert 'none of the 1 evaluations' in plot_curves.summarize(metrics)[0]
    metrics.eval = []
    assert plot_curves.summarize(metrics)[0].startswith('best segm_AP: no evaluation')


def test_unknown_key_and_missing_file_are_one_line_errors(run_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r'no key `segm_ap` \(did you mean `segm_AP`\?\)'):
        plot_curves.main([str(run_dir), '--keys', 'loss,segm_ap'])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        plot_curves.run_main(plot_curves.main, [str(empty)])
    assert exit_info.value.code == DataError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'metrics.jsonl: not found' in err


def test_unfinished_last_line_is_ignored_a_broken_middle_line_is_not(run_dir):
    path = run_dir / 'metrics.jsonl'
    lines = path.read_text().splitlines()
    path.write_text('\n'.join(lines) + '\n{"type": "train", "ste')
    assert len(plot_curves.read_metrics(str(run_dir)).train) == len(lines) - EPOCHS
    path.write_text('\n'.join(lines[:3] + ['{oops'] + lines[3:]) + '\n')
    with pytest.raises(DataError, match=r'metrics.jsonl:4: not a JSON object'):
        plot_curves.read_metrics(str(run_dir))
