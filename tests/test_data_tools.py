"""tools/check_dataset.py and tools/x2coco.py."""
import base64
import json
import os
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA, needs_shared
from ppdet.core.errors import DataError
from ppdet.data import COCODataSet, generate_quickstart
from ppdet.data.transforms.operators import segm_to_mask

sys.path.insert(0, os.path.join(ROOT, 'tools'))
import check_dataset  # noqa: E402
import x2coco  # noqa: E402

FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('check') / 'qs'
    generate_quickstart(str(root), num_train=6, num_val=2, seed=2)
    return root


def run_check(root, capsys, *extra):
    argv = ['-c', os.path.join(ROOT, 'configs', 'quickstart.yml'),
            '-o', f'TrainDataset.dataset_dir={root}', f'EvalDataset.dataset_dir={root}', *extra]
    try:
        check_dataset.main(argv)
        code = 0
    except DataError as err:
        code = str(err)
    return code, capsys.readouterr().out


def test_check_dataset_summarises_a_clean_set(small_set, capsys):
    code, out = run_check(small_set, capsys, '--decode')
    coco = json.load(open(small_set / 'annotations' / 'instances_train.json'))
    things = [a for a in coco['annotations'] if not a['iscrowd']]
    assert code == 0 and 'no problem found' in out
    assert f'images: 6   instances: {len(things)}' in out
    for k, name in enumerate(['disc', 'square', 'triangle', 'star'], start=1):
        n = sum(a['category_id'] == k for a in things)
        assert any(line.split() == [name, str(n)] for line in out.splitlines())
    # grid levels follow the head's section of configs/quickstart.yml
    assert 'level 0  grid 16x16  range [1, 32]' in out and 'level 4  grid 4x4' in out
    histogram = [line for line in out.splitlines() if line.strip().startswith('[')]
    assert sum(int(line.split(')')[1].split()[0]) for line in histogram[:8]) == len(things)


def test_check_dataset_lists_every_problem(small_set, tmp_path, capsys):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(small_set, root)
    path = root / 'annotations' / 'instances_train.json'
    coco = json.load(open(path))
    coco['annotations'][0]['segmentation'] = [[1, 1, 5, 1]]
    coco['annotations'][-1]['bbox'][2] = -4
    path.write_text(json.dumps(coco))
    os.remove(root / 'train' / coco['images'][2]['file_name'])
    code, out = run_check(root, capsys, '--split', 'train')
    problems = [line for line in out.splitlines() if line.startswith('problem:')]
    assert len(problems) == 3 and '3 problem(s) found' in code
    first, last = coco['annotations'][0], coco['annotations'][-1]
    assert any(f'annotation {first["id"]} ' in p and 'needs at least 3' in p for p in problems)
    assert any(f'annotation {last["id"]} ' in p and 'negative size' in p for p in problems)
    assert any(coco['images'][2]['file_name'] in p and 'not found' in p for p in problems)


# -- x2coco -------------------------------------------------------------------------------
def labelme_doc(image_path, h, w, shapes, image_data=None):
    return {'version': '5.2.1', 'flags': {}, 'shapes': shapes, 'imagePath': image_path,
            'imageData': image_data, 'imageHeight': h, 'imageWidth': w}


@needs_shared
def test_x2coco_round_trips_real_labelme_polygons(tmp_path):
    src = os.path.join(SHARED_DATA, 'labelme_voc3')
    coco = json.load(open(os.path.join(src, 'annotations.json')))
    names = {c['id']: c['name'] for c in coco['categories']}
    labelme = tmp_path / 'labelme'
    labelme.mkdir()
    for image in coco['images']:
        shapes = []
        for ann in (a for a in coco['annotations'] if a['image_id'] == image['id']):
            for part in ann['segmentation']:      # multi-part instances share a group_id
                shapes.append({'label': names[ann['category_id']], 'group_id': ann['id'],
                               'shape_type': 'polygon',
                               'points': np.reshape(part, (-1, 2)).tolist()})
        doc = labelme_doc(os.path.join(src, 'images', image['file_name']), image['height'],
                          image['width'], shapes)
        (labelme / (image['file_name'][:-4] + '.json')).write_text(json.dumps(doc))
    out = tmp_path / 'coco'
    counts, categories = x2coco.convert(str(labelme), str(out), val_ratio=1 / 3, seed=0)
    assert counts['train'][0] == 2 and counts['val'][0] == 1
    assert counts['train'][1] + counts['val'][1] == len(coco['annotations'])
    assert categories == sorted({names[a['category_id']] for a in coco['annotations']})
    original = COCODataSet(src, 'images', 'annotations.json', data_fields=FIELDS)
    masks_of = {}
    for record in original.records:
        h, w = int(record['h']), int(record['w'])
        masks_of[os.path.basename(record['im_file'])] = sorted(
            segm_to_mask(s, h, w).sum() for s in record['gt_poly'])
    for split in ('train', 'val'):
        ds = COCODataSet(str(out), split, f'annotations/instances_{split}.json',
                         data_fields=FIELDS)
        assert ds.problems == []
        for record in ds.records:
            h, w = int(record['h']), int(record['w'])
            mine = sorted(segm_to_mask(s, h, w).sum() for s in record['gt_poly'])
            assert mine == masks_of[os.path.basename(record['im_file'])]
            assert os.path.isfile(record['im_file'])


def test_x2coco_shapes_embedded_images_and_errors(tmp_path):
    labelme = tmp_path / 'labelme'
    labelme.mkdir()
    ok, png = cv2.imencode('.png', np.zeros((50, 80, 3), np.uint8))
    shapes = [{'label': 'b', 'shape_type': 'rectangle', 'points': [[10, 10], [30, 20]]},
              {'label': 'a', 'shape_type': 'circle', 'points': [[50, 25], [60, 25]]},
              {'label': 'a', 'shape_type': 'line', 'points': [[0, 0], [5, 5]]}]
    doc = labelme_doc('gone/embedded.png', 50, 80, shapes, base64.b64encode(png).decode())
    (labelme / 'embedded.json').write_text(json.dumps(doc))
    counts, categories = x2coco.convert(str(labelme), str(tmp_path / 'out'), val_ratio=0)
    assert counts == {'train': (1, 2), 'val': (0, 0)} and categories == ['a', 'b']
    train = json.load(open(tmp_path / 'out' / 'annotations' / 'instances_train.json'))
    rect, disc = train['annotations']
    assert rect['bbox'] == [10, 10, 20, 10] and rect['category_id'] == 2
    assert abs(disc['area'] - np.pi * 100) < 15 and disc['id'] == 2
    assert (tmp_path / 'out' / 'train' / 'embedded.png').is_file()

    doc['shapes'] = [{'label': 'a', 'shape_type': 'polygon', 'points': [[1, 1], [4, 4]]}]
    (labelme / 'embedded.json').write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r'embedded.json: shape 0: a polygon needs at least 3'):
        x2coco.convert(str(labelme), str(tmp_path / 'out2'))
    (labelme / 'embedded.json').write_text('{"shapes": [')
    with pytest.raises(DataError, match='embedded.json: not a valid labelme JSON'):
        x2coco.convert(str(labelme), str(tmp_path / 'out3'))
