"""docs/custom_dataset.md runs as written: its config and every command, in order, on a small
labelme folder made from quick-start images (training shortened with ``max_iters``)."""
import json
import logging
import os
import re
import runpy
import shlex
import sys

import numpy as np
import pytest

from conftest import ROOT

from ppdet.data import generate_quickstart

DOC = os.path.join(ROOT, 'docs', 'custom_dataset.md')
NUM_IMAGES = 10
# Added to the documented `-o` lists so that the run takes seconds, not hours.
TEST_OVERRIDES = {'train.py': ['max_iters=2', 'worker_num=0'], 'eval.py': ['worker_num=0']}
LINKED = ('ppdet', 'tools', 'train.py', 'eval.py', 'infer.py')


def doc_blocks(text, lang):
    return re.findall(rf'```{lang}\n(.*?)```', text, re.S)


def doc_files(text):
    """``{path: content}`` of the blocks introduced by "Save this as `path`:"."""
    return dict(re.findall(r'[Ss]ave this as `([^`]+)`:\s*```yaml\n(.*?)```', text, re.S))


def doc_commands(text):
    return [shlex.split(line) for block in doc_blocks(text, 'bash')
            for line in block.splitlines() if line.strip() and not line.startswith('#')]


def with_test_overrides(argv):
    extra = TEST_OVERRIDES.get(os.path.basename(argv[1]), [])
    if not extra:
        return argv
    if '-o' not in argv:
        return argv + ['-o'] + extra
    at = argv.index('-o') + 1
    return argv[:at] + extra + argv[at:]


def _labelme_folder(folder, source):
    """Quick-start images with their (non-crowd) polygons written as labelme files; an
    instance of several parts becomes polygons sharing a group_id, as labelme draws it."""
    os.makedirs(folder)
    with open(os.path.join(source, 'annotations', 'instances_train.json')) as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    for image in coco['images']:
        shapes = []
        for ann in coco['annotations']:
            if ann['image_id'] != image['id'] or ann['iscrowd']:
                continue
            group = ann['id'] if len(ann['segmentation']) > 1 else None
            shapes += [{'label': names[ann['category_id']], 'group_id': group, 'flags': {},
                        'shape_type': 'polygon',
                        'points': np.reshape(poly, (-1, 2)).tolist()}
                       for poly in ann['segmentation']]
        stem = f'img_{image["id"]:04d}'
        os.link(os.path.join(source, 'train', image['file_name']),
                os.path.join(folder, stem + '.png'))
        with open(os.path.join(folder, stem + '.json'), 'w') as f:
            json.dump({'version': '5.4.1', 'flags': {}, 'shapes': shapes,
                       'imagePath': stem + '.png', 'imageData': None,
                       'imageHeight': image['height'], 'imageWidth': image['width']}, f)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder that looks like the repository root (code linked, configs/ its own)."""
    root = tmp_path_factory.mktemp('custom_dataset')
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), root / name)
    (root / 'configs').mkdir()
    for name in os.listdir(os.path.join(ROOT, 'configs')):
        os.symlink(os.path.join(ROOT, 'configs', name), root / 'configs' / name)
    generate_quickstart(str(root / 'source'), num_train=NUM_IMAGES, num_val=1)
    _labelme_folder(str(root / 'my_labels'), str(root / 'source'))
    return root


@pytest.fixture
def run_script(monkeypatch, capsys):
    """Run ``python SCRIPT ARGS`` in this process (one paddle import for all commands) as
    ``python`` would: ``__main__``, ``sys.argv``; returns what it printed."""
    logger = logging.getLogger('ppdet')
    saved = logger.handlers[:], logger.__dict__.get('_configured', False)
    logger.handlers[:], logger._configured = [], False   # the scripts log to this test's stdout

    def run(argv, cwd):
        assert argv[0] == 'python', argv
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, 'argv', argv[1:])
        monkeypatch.setattr(sys, 'path', sys.path[:])
        try:
            runpy.run_path(argv[1], run_name='__main__')
        except SystemExit as stop:
            out = capsys.readouterr()
            assert stop.code in (0, None), f'{shlex.join(argv)}\n{out.out[-3000:]}\n{out.err}'
        return capsys.readouterr().out

    yield run
    logger.handlers[:], logger._configured = saved      # the scripts' handler wrote to capsys


def test_custom_dataset_tutorial_runs_as_written(workspace, run_script):
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    for path, content in doc_files(text).items():
        with open(workspace / path, 'w') as f:
            f.write(content)
    commands = doc_commands(text)
    scripts = [os.path.basename(argv[1]) for argv in commands]
    assert scripts == ['x2coco.py', 'check_dataset.py', 'browse_dataset.py', 'train.py',
                       'plot_curves.py', 'eval.py', 'infer.py']
    logs = {script: run_script(with_test_overrides(argv), workspace)
            for script, argv in zip(scripts, commands)}

    data = workspace / 'dataset' / 'my_shapes'
    with open(data / 'annotations' / 'instances_train.json') as f:
        categories = [c['name'] for c in json.load(f)['categories']]
    assert categories == ['disc', 'square', 'star', 'triangle']    # num_classes: 4 in the doc
    num_val = len(os.listdir(data / 'val'))
    assert num_val == 2 and len(os.listdir(data / 'train')) == NUM_IMAGES - num_val
    assert 'no problem found' in logs['check_dataset.py']
    assert len(os.listdir(workspace / 'output' / 'browse_my_shapes')) == 2 * 8
    run = workspace / 'output' / 'my_shapes'
    assert (run / 'model_final.pdparams').is_file() and (run / 'curves.png').is_file()
    assert 'best segm_AP' in logs['plot_curves.py']      # none yet after 2 iterations
    # Two iterations predict nothing yet; what matters is that this run's weights were used.
    assert 'output/my_shapes/model_final.pdparams: loaded' in logs['eval.py']
    assert sorted(os.listdir(workspace / 'output' / 'my_shapes_pictures')) == \
        sorted(os.listdir(data / 'val'))


def test_full_model_variant_of_the_config_loads(workspace):
    """The page says: for the full model change only the `_BASE_` line."""
    from ppdet.core.config import load_config
    with open(DOC, encoding='utf-8') as f:
        (path, content), = doc_files(f.read()).items()
    full = content.replace("_BASE_: ['quickstart.yml']",
                           "_BASE_: ['solov2/solov2_r50_fpn_1x_coco.yml']")
    assert full != content
    target = workspace / 'configs' / 'my_shapes_r50.yml'
    target.write_text(full)
    cfg = load_config(str(target))
    assert cfg['num_classes'] == 4 and cfg['ResNet']['depth'] == 50
    assert cfg['TrainDataset']['dataset_dir'] == 'dataset/my_shapes'
    assert cfg['TrainReader']['batch_size'] == 2 and cfg['LearningRate']['base_lr'] == 0.01
