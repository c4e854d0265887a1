"""``train.py --use_vdl --eval``: VisualDL's own reader finds the loss, the learning rate and
the AP of every evaluation, as metrics.jsonl records them (the session's tiny quick-start run
trains with ``--use_vdl``)."""
import os

import pytest
from visualdl import LogReader

from fixtures.quickstart_run import metric_rows


def test_use_vdl_writes_loss_lr_and_the_ap_of_every_evaluation(trained_quickstart):
    run = trained_quickstart
    train = metric_rows(run.out / 'metrics.jsonl', 'train')
    evals = metric_rows(run.out / 'metrics.jsonl', 'eval')
    assert len(train) == 4 and len(evals) == 2          # 2 epochs of 2 steps, logged each step

    (log_file,) = os.listdir(run.vdl_dir)
    reader = LogReader(file_path=str(run.vdl_dir / log_file))

    def scalars(tag):
        return [(r.id, r.value) for r in reader.get_data('scalar', tag)]

    for tag, key, kind in [('train/loss', 'loss', train), ('train/lr', 'lr', train),
                           ('eval/segm_AP', 'segm_AP', evals)]:
        read = scalars(tag)
        assert [step for step, _ in read] == [r['step'] for r in kind], tag
        assert [value for _, value in read] == pytest.approx([r[key] for r in kind],
                                                             rel=1e-6, abs=1e-9), tag
