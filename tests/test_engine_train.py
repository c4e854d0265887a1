"""train.py / eval.py / infer.py on the tiny quick-start run (128 px, 8 training images).

The session's ``trained_quickstart`` run (2 epochs, --eval, EMA) is shared by most tests.
"""
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import eval as eval_script
import infer as infer_script
import train as train_script
from ppdet.utils.cli import run_main
from ppdet.utils.fileio import load_file

from fixtures.quickstart_run import metric_rows

pytestmark = pytest.mark.usefixtures('fresh_logger')


def test_run_writes_snapshots_best_model_and_metrics(trained_quickstart):
    out = trained_quickstart.out
    for name in ('0', 'model_final', 'best_model'):
        for ext in ('.pdparams', '.pdopt', '.pdema'):
            assert (out / (name + ext)).is_file(), name + ext
    train_rows = metric_rows(out / 'metrics.jsonl', 'train')
    assert [(r['epoch'], r['iter']) for r in train_rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {'lr', 'loss', 'loss_ins', 'loss_cate', 'batch_time', 'data_time', 'eta',
            'time'} <= set(train_rows[0])
    evals = metric_rows(out / 'metrics.jsonl', 'eval')
    assert [r['epoch'] for r in evals] == [0, 1]
    assert {'segm_AP', 'segm_AP50', 'bbox_AP', 'segm_ARl'} <= set(evals[0])


def test_amp_on_cpu_warns_and_trains_in_float32(trained_quickstart):
    warned = [m for m in trained_quickstart.log if '--amp' in m]
    assert warned == ['--amp has no effect on the CPU (paddle runs float32 there); '
                      'training in float32']
    weights = load_file(trained_quickstart.weights() + '.pdparams')
    assert all(v.dtype == np.float32 for v in weights.values() if v.dtype.kind == 'f')


def test_ema_weights_are_saved_and_evaluated(trained_quickstart, tmp_path):
    run = trained_quickstart
    ema = load_file(run.weights() + '.pdparams')
    raw = load_file(run.weights() + '.pdema')
    assert set(ema) == set(raw)
    assert max(np.abs(ema[k] - raw[k]).max() for k in ema if k.endswith('weight')) > 1e-4
    results = eval_script.main(['-c', run.config, '-w', run.weights(),
                                '--output_eval', str(tmp_path)])
    logged = metric_rows(run.out / 'metrics.jsonl', 'eval')[-1]
    assert results['segm_AP'] == pytest.approx(logged['segm_AP'])
    assert results['bbox_AP'] == pytest.approx(logged['bbox_AP'])
    # eval.py's figure is pycocotools' on the json it wrote
    gt = COCO(str(run.data / 'annotations' / 'instances_val.json'))
    records = json.loads((tmp_path / 'segm.json').read_text())
    coco_eval = COCOeval(gt, gt.loadRes(records), 'segm')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert results['segm_AP'] == pytest.approx(coco_eval.stats[0])
    again = eval_script.main(['-c', run.config, '-w', run.weights(), '--json_eval',
                              '--output_eval', str(tmp_path)])
    assert again['segm_AP'] == pytest.approx(results['segm_AP'])


def test_best_model_is_the_best_evaluation(trained_quickstart):
    out = trained_quickstart.out
    evals = metric_rows(out / 'metrics.jsonl', 'eval')
    best_epoch = max(range(len(evals)), key=lambda i: (evals[i]['segm_AP'], i))
    best = load_file(str(out / 'best_model.pdparams'))
    name = 'model_final' if best_epoch == 1 else '0'        # ties go to the later epoch
    snapshot = load_file(str(out / f'{name}.pdparams'))
    for key in best:
        np.testing.assert_array_equal(best[key], snapshot[key])


def test_resume_from_epoch_one_repeats_epoch_two(trained_quickstart, tmp_path, ppdet_log):
    run = trained_quickstart
    run_main(train_script.main, ['-c', run.config, '--eval', '-r', run.weights('0'), '-o',
                                 'use_ema=true', 'ema_decay=0.9', f'save_dir={tmp_path}'])
    assert any(r.getMessage().startswith('resumed from') and
               r.getMessage().endswith('epoch 1, step 2') for r in ppdet_log)
    first = [r for r in metric_rows(run.out / 'metrics.jsonl', 'train') if r['epoch'] == 1]
    again = metric_rows(tmp_path / 'tiny' / 'metrics.jsonl', 'train')
    assert [(r['epoch'], r['step']) for r in again] == [(r['epoch'], r['step']) for r in first]
    for key in ('loss', 'loss_ins', 'loss_cate', 'lr'):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in first], rtol=1e-5)


def test_infer_writes_drawings_and_json_for_an_image_and_a_folder(trained_quickstart, tmp_path):
    run = trained_quickstart
    image = run.val_images()[0]
    infer_script.main(['-c', run.config, '-w', run.weights(), '--infer_img', image,
                       '--output_dir', str(tmp_path / 'one'), '--save_results',
                       '--draw_threshold', '0.0'])
    assert (tmp_path / 'one' / os.path.basename(image)).is_file()
    records = json.loads((tmp_path / 'one' / 'segm.json').read_text())
    assert all(r['image_id'] == 0 and 'counts' in r['segmentation'] for r in records)
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in run.val_images()[:2]:
        os.symlink(path, folder / os.path.basename(path))
    infer_script.main(['-c', run.config, '-w', run.weights(), '--infer_dir', str(folder),
                       '--output_dir', str(tmp_path / 'many'), '--save_results', 'true'])
    drawn = sorted(p.name for p in (tmp_path / 'many').iterdir() if p.suffix == '.png')
    assert drawn == sorted(os.listdir(folder))
    assert (tmp_path / 'many' / 'bbox.json').is_file()


@pytest.mark.parametrize('script, args, message', [
    (infer_script, ['-w', '{weights}', '--infer_img', '{text}'], 'is not an image'),
    (eval_script, ['-w', '{tmp}/missing'], 'weights file not found'),
    (train_script, ['-r', '{tmp}/nope', '-o', 'save_dir={tmp}'], 'checkpoint not found'),
    (train_script, ['-o', 'save_dir={tmp}', 'pretrain_weights=pretrained/none.pdparams'],
     'pretrain_weights= to train from scratch'),
    (train_script, ['-o', 'save_dir={tmp}', 'num_classes=80', 'max_iters=1'],
     '4 categories but num_classes is 80; set -o num_classes=4'),
], ids=['not-an-image', 'no-weights', 'no-checkpoint', 'no-pretrain-weights', 'num-classes'])
def test_bad_inputs_are_one_line_errors(trained_quickstart, tmp_path, capsys, script, args,
                                        message):
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    values = {'weights': trained_quickstart.weights(), 'text': text, 'tmp': tmp_path}
    argv = ['-c', trained_quickstart.config] + [a.format(**values) for a in args]
    with pytest.raises(SystemExit) as stop:
        run_main(script.main, argv)
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err, err[-2000:]
