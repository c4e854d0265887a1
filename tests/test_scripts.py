"""The documented commands, run as written on the quick-start data through -o overrides.

The COCO configs keep their models (ResNet50/101, DCN, EMA...) and train an iteration or two
at 128 px, batch 1, on the generated quick-start images.  (The r50 3x model is the 1x model
with another schedule, so the 1x run stands for both.)
"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SMALL = '{interp: 1, target_size: [128, 128], keep_ratio: true}'
NORMALIZE = '{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'
TRAIN_OPS = (f'[{{Decode: {{}}}}, {{Poly2Mask: {{}}}}, {{Resize: {SMALL}}}, {{RandomFlip: {{}}}}, '
             f'{{NormalizeImage: {NORMALIZE}}}, {{Permute: {{}}}}]')
EVAL_OPS = (f'[{{Decode: {{}}}}, {{NormalizeImage: {NORMALIZE}}}, {{Resize: {SMALL}}}, '
            f'{{Permute: {{}}}}]')


def quickstart_overrides(save_dir, max_iters=1):
    qs = 'dataset/quickstart'
    return ['-o', f'save_dir={save_dir}', 'pretrain_weights=', f'max_iters={max_iters}',
            'worker_num=0', 'num_classes=4',
            f'TrainDataset.dataset_dir={qs}', 'TrainDataset.image_dir=train',
            'TrainDataset.anno_path=annotations/instances_train.json', 'TrainDataset.sample_num=2',
            f'EvalDataset.dataset_dir={qs}', 'EvalDataset.image_dir=val',
            'EvalDataset.anno_path=annotations/instances_val.json', 'EvalDataset.sample_num=1',
            f'TestDataset.dataset_dir={qs}', 'TestDataset.anno_path=annotations/instances_val.json',
            f'TrainReader.sample_transforms={TRAIN_OPS}', 'TrainReader.batch_size=1',
            f'EvalReader.sample_transforms={EVAL_OPS}', f'TestReader.sample_transforms={EVAL_OPS}']


def run(args):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f'{args[:4]}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module', autouse=True)
def quickstart_data():
    from ppdet.data import generate_quickstart
    generate_quickstart(os.path.join(ROOT, 'dataset', 'quickstart'))


def test_enhance_config_with_amp(tmp_path):
    log = run(['train.py', '-c', 'configs/solov2_r50_enhance_coco.yml', '--amp',
               *quickstart_overrides(tmp_path)])
    assert '--amp has no effect on the CPU' in log
    out = tmp_path / 'solov2_r50_enhance_coco'
    assert (out / 'model_final.pdparams').is_file() and (out / 'model_final.pdema').is_file()


def test_r101_config_starts_training(tmp_path):
    config = 'solov2_r101_vd_fpn_3x_coco'
    run(['train.py', '-c', f'configs/solov2/{config}.yml', *quickstart_overrides(tmp_path)])
    assert (tmp_path / config / 'model_final.pdopt').is_file()


def test_1x_config_train_eval_resume_evaluate_infer(tmp_path):
    config = 'configs/solov2/solov2_r50_fpn_1x_coco.yml'
    opts = quickstart_overrides(tmp_path)
    run(['train.py', '-c', config, '--eval', *opts])
    final = tmp_path / 'solov2_r50_fpn_1x_coco' / 'model_final'
    log = run(['train.py', '-c', config, '-r', str(final),
               *quickstart_overrides(tmp_path / 'resumed', max_iters=2)])
    assert 'resumed from' in log and 'epoch 0, step 1' in log
    assert (tmp_path / 'resumed' / 'solov2_r50_fpn_1x_coco' / 'model_final.pdparams').is_file()
    run(['eval.py', '-c', config, '-w', str(final), *opts])
    val = os.path.join(ROOT, 'dataset', 'quickstart', 'val')
    image = os.path.join(val, sorted(os.listdir(val))[0])
    run(['infer.py', '-c', config, '-w', str(final), f'--infer_img={image}',
         '--output_dir', str(tmp_path / 'one'), *opts])
    assert (tmp_path / 'one' / os.path.basename(image)).is_file()
    folder = tmp_path / 'images'
    folder.mkdir()
    os.symlink(image, folder / os.path.basename(image))
    run(['infer.py', '-c', config, '-w', str(final), f'--infer_dir={folder}',
         '--draw_threshold', '0.5', '--save_results', '--output_dir', str(tmp_path / 'dir'),
         *opts])
    assert (tmp_path / 'dir' / 'segm.json').is_file()
