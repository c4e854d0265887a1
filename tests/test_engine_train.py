"""train.py / eval.py / infer.py on a tiny quick-start run (128 px, 8 training images).

One module-scoped run (2 epochs, --eval, EMA) is shared by most tests.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import ROOT

PYTHON = sys.executable
SIZE = 128
TINY = """
_BASE_: ['{root}/configs/quickstart.yml']
epoch: 2
log_iter: 1
worker_num: 0
seed: 0
save_dir: {save_dir}
SOLOv2Head: {{score_threshold: 0.0}}   # an untrained model still predicts something
MaskMatrixNMS: {{update_threshold: 0.0, pre_nms_top_n: 50, post_nms_top_n: 20}}
TrainDataset: {{sample_num: 8}}
EvalDataset: {{sample_num: 4}}
LearningRate:
  base_lr: 0.002
  schedulers:
  - !PiecewiseDecay {{gamma: 0.1, milestones: [1]}}
  - !LinearWarmup {{start_factor: 0.1, steps: 2}}
TrainReader:
  batch_size: 4
  sample_transforms:
  - Decode: {{}}
  - Poly2Mask: {{}}
  - Resize: {{interp: 1, target_size: [{size}, {size}], keep_ratio: True}}
  - RandomFlip: {{}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
EvalReader: &eval
  sample_transforms:
  - Decode: {{}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Resize: {{interp: 1, target_size: [{size}, {size}], keep_ratio: True}}
  - Permute: {{}}
TestReader: *eval
"""


def write_config(folder, name='tiny'):
    path = folder / f'{name}.yml'
    path.write_text(TINY.format(root=ROOT, save_dir=folder / 'out', size=SIZE))
    return str(path)


def run_script(args, check=True, env=None):
    proc = subprocess.run([PYTHON, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def rows(path, kind):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r['type'] == kind]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """2 epochs with --eval and EMA; the dataset is generated on first use."""
    folder = tmp_path_factory.mktemp('run')
    cfg = write_config(folder)
    run_script(['train.py', '-c', cfg, '--eval', '-o', 'use_ema=true', 'ema_decay=0.9'])
    return folder, cfg, folder / 'out' / 'tiny'


def test_run_writes_snapshots_best_model_and_metrics(trained):
    _, _, out = trained
    for name in ('0', 'model_final', 'best_model'):
        for ext in ('.pdparams', '.pdopt', '.pdema'):
            assert (out / (name + ext)).is_file(), name + ext
    train_rows = rows(out / 'metrics.jsonl', 'train')
    assert [(r['epoch'], r['iter']) for r in train_rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {'lr', 'loss', 'loss_ins', 'loss_cate', 'batch_time', 'data_time', 'eta',
            'time'} <= set(train_rows[0])
    evals = rows(out / 'metrics.jsonl', 'eval')
    assert [r['epoch'] for r in evals] == [0, 1]
    assert {'segm_AP', 'segm_AP50', 'bbox_AP', 'segm_ARl'} <= set(evals[0])


def test_ema_weights_are_saved_and_evaluated(trained, tmp_path):
    folder, cfg, out = trained
    from ppdet.utils.fileio import load_file
    ema = load_file(str(out / 'model_final.pdparams'))
    raw = load_file(str(out / 'model_final.pdema'))
    assert set(ema) == set(raw)
    assert max(np.abs(ema[k] - raw[k]).max() for k in ema if k.endswith('weight')) > 1e-4
    import eval as eval_script
    results = eval_script.main(['-c', cfg, '-w', str(out / 'model_final'),
                                '--output_eval', str(tmp_path)])
    logged = rows(out / 'metrics.jsonl', 'eval')[-1]
    assert results['segm_AP'] == pytest.approx(logged['segm_AP'])
    assert results['bbox_AP'] == pytest.approx(logged['bbox_AP'])
    # eval.py's figure is pycocotools' on the json it wrote
    gt = COCO(os.path.join(ROOT, 'dataset/quickstart/annotations/instances_val.json'))
    records = json.loads((tmp_path / 'segm.json').read_text())
    coco_eval = COCOeval(gt, gt.loadRes(records), 'segm')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert results['segm_AP'] == pytest.approx(coco_eval.stats[0])
    again = eval_script.main(['-c', cfg, '--json_eval', '--output_eval', str(tmp_path)])
    assert again['segm_AP'] == pytest.approx(results['segm_AP'])


def test_best_model_is_the_best_evaluation(trained):
    _, _, out = trained
    from ppdet.utils.fileio import load_file
    evals = rows(out / 'metrics.jsonl', 'eval')
    best_epoch = max(range(len(evals)), key=lambda i: (evals[i]['segm_AP'], i))
    best = load_file(str(out / 'best_model.pdparams'))
    name = 'model_final' if best_epoch == 1 else '0'        # ties go to the later epoch
    snapshot = load_file(str(out / f'{name}.pdparams'))
    for key in best:
        np.testing.assert_array_equal(best[key], snapshot[key])


def test_resume_from_epoch_one_repeats_epoch_two(trained, tmp_path):
    _, cfg, out = trained
    run_script(['train.py', '-c', cfg, '--eval', '-r', str(out / '0'),
                '-o', 'use_ema=true', 'ema_decay=0.9', f'save_dir={tmp_path}'])
    first = [r for r in rows(out / 'metrics.jsonl', 'train') if r['epoch'] == 1]
    again = rows(tmp_path / 'tiny' / 'metrics.jsonl', 'train')
    assert [(r['epoch'], r['step']) for r in again] == [(r['epoch'], r['step']) for r in first]
    for key in ('loss', 'loss_ins', 'loss_cate', 'lr'):
        np.testing.assert_allclose([r[key] for r in again], [r[key] for r in first], rtol=1e-5)


def test_infer_writes_drawings_and_json_for_an_image_and_a_folder(trained, tmp_path):
    _, cfg, out = trained
    import infer as infer_script
    val = os.path.join(ROOT, 'dataset', 'quickstart', 'val')
    image = os.path.join(val, sorted(os.listdir(val))[0])
    infer_script.main(['-c', cfg, '-w', str(out / 'model_final'), '--infer_img', image,
                       '--output_dir', str(tmp_path / 'one'), '--save_results',
                       '--draw_threshold', '0.0'])
    assert (tmp_path / 'one' / os.path.basename(image)).is_file()
    records = json.loads((tmp_path / 'one' / 'segm.json').read_text())
    assert all(r['image_id'] == 0 and 'counts' in r['segmentation'] for r in records)
    folder = tmp_path / 'images'
    folder.mkdir()
    for name in sorted(os.listdir(val))[:2]:
        os.symlink(os.path.join(val, name), folder / name)
    infer_script.main(['-c', cfg, '-w', str(out / 'model_final'), '--infer_dir', str(folder),
                       '--output_dir', str(tmp_path / 'many'), '--save_results', 'true'])
    drawn = sorted(p.name for p in (tmp_path / 'many').iterdir() if p.suffix == '.png')
    assert drawn == sorted(os.listdir(folder))
    assert (tmp_path / 'many' / 'bbox.json').is_file()


def test_bad_inputs_are_one_line_errors(trained, tmp_path):
    _, cfg, out = trained
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    cases = [
        (['infer.py', '-c', cfg, '-w', str(out / 'model_final'), '--infer_img', str(text)],
         'is not an image'),
        (['eval.py', '-c', cfg, '-w', str(tmp_path / 'missing')], 'weights file not found'),
        (['train.py', '-c', cfg, '-r', str(tmp_path / 'nope')], 'checkpoint not found'),
        (['train.py', '-c', cfg, '-o', 'pretrain_weights=pretrained/none.pdparams'],
         'pretrain_weights= to train from scratch'),
        (['train.py', '-c', cfg, '-o', 'num_classes=80', 'max_iters=1'],
         '4 categories but num_classes is 80; set -o num_classes=4'),
    ]
    for args, message in cases:
        proc = run_script(args, check=False)
        assert proc.returncode != 0
        assert message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr[-2000:]


def test_amp_on_cpu_warns_and_trains(tmp_path):
    cfg = write_config(tmp_path)
    proc = run_script(['train.py', '-c', cfg, '--amp', '-o', 'max_iters=1'])
    assert '--amp has no effect on the CPU' in proc.stdout + proc.stderr
    assert (tmp_path / 'out' / 'tiny' / 'model_final.pdparams').is_file()


def test_two_process_launch_keeps_ranks_identical(tmp_path):
    cfg = write_config(tmp_path)
    proc = run_script(['-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
                       '--log_dir', str(tmp_path / 'log'), 'tests/_launch_train.py',
                       str(tmp_path), '-c', cfg, '--eval', '-o', 'epoch=1'], check=False)
    logs = ''.join(p.read_text() for p in (tmp_path / 'log').glob('workerlog.*'))
    assert proc.returncode == 0, logs[-3000:]
    a, b = np.load(tmp_path / 'rank0.npz'), np.load(tmp_path / 'rank1.npz')
    assert set(a.files) == set(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    out = tmp_path / 'out' / 'tiny'
    assert (out / 'best_model.pdparams').is_file()
    assert len(rows(out / 'metrics.jsonl', 'train')) == 1        # 8 images / 2 ranks / 4
