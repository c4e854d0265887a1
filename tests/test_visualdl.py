"""``train.py --use_vdl --eval``: VisualDL's own reader finds the loss, the learning rate and
the AP of every evaluation, as metrics.jsonl records them."""
import json
import os

import pytest
from visualdl import LogReader

import train as train_script
from ppdet.utils.cli import run_main

from conftest import ROOT

pytestmark = pytest.mark.usefixtures('fresh_logger')


def test_use_vdl_writes_loss_lr_and_the_ap_of_every_evaluation(tmp_path):
    vdl_dir = tmp_path / 'vdl'
    run_main(train_script.main, [
        '-c', os.path.join(ROOT, 'configs/quickstart.yml'), '--eval', '--use_vdl',
        '--vdl_log_dir', str(vdl_dir), '-o', f'save_dir={tmp_path / "out"}', 'epoch=2',
        'log_iter=1', 'worker_num=0', 'TrainDataset.sample_num=8', 'EvalDataset.sample_num=2',
        'SOLOv2Head.score_threshold=0.0', 'MaskMatrixNMS.update_threshold=0.0'])
    with open(tmp_path / 'out' / 'quickstart' / 'metrics.jsonl') as f:
        rows = [json.loads(line) for line in f]
    train = [r for r in rows if r['type'] == 'train']
    evals = [r for r in rows if r['type'] == 'eval']
    assert len(train) == 4 and len(evals) == 2          # 2 epochs of 2 steps, logged each step

    (log_file,) = os.listdir(vdl_dir)
    reader = LogReader(file_path=str(vdl_dir / log_file))

    def scalars(tag):
        return [(r.id, r.value) for r in reader.get_data('scalar', tag)]

    for tag, key, kind in [('train/loss', 'loss', train), ('train/lr', 'lr', train),
                           ('eval/segm_AP', 'segm_AP', evals)]:
        read = scalars(tag)
        assert [step for step, _ in read] == [r['step'] for r in kind], tag
        assert [value for _, value in read] == pytest.approx([r[key] for r in kind],
                                                             rel=1e-6, abs=1e-9), tag
