"""COCODataSet on real annotations, and every kind of bad data named by file and annotation."""
import json
import os
import re

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, needs_shared
from ppdet.core.config import Config
from ppdet.core.errors import DataError
from ppdet.data import COCODataSet, ImageFolder, build_dataset

FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']


@needs_shared
def test_coco_person_train_split_as_the_reference_reads_it():
    root = os.path.join(SHARED_DATA, 'coco_person60')
    ds = COCODataSet(root, 'images/train2017', 'annotations/person_keypoints_train2017.json',
                     data_fields=FIELDS)
    raw = json.load(open(ds.anno_path))
    assert ds.problems == []
    assert ds.categories.catid2clsid == {1: 0} and ds.categories.clsid2catid == {0: 1}
    assert ds.category_names == ['person']
    ids = [int(r['im_id'][0]) for r in ds.records]
    assert ids == sorted(ids) and len(ids) == 19       # images without a usable box are skipped
    assert not any(r['is_crowd'].any() for r in ds.records)      # crowd not loaded by default
    boxes = sum(len(r['gt_bbox']) for r in ds.records)
    usable = [a for a in raw['annotations'] if not a['iscrowd'] and a['area'] > 0
              and a['bbox'][2] > 1e-5 and a['bbox'][3] > 1e-5]
    assert boxes == len(usable)
    first = ds.records[0]
    ann = next(a for a in raw['annotations'] if a['id'] == first['ann_ids'][0])
    x, y, w, h = ann['bbox']
    assert np.allclose(first['gt_bbox'][0], [x, y, x + w, y + h], atol=1e-3)
    assert first['gt_poly'][0] == ann['segmentation']

    with_crowd = COCODataSet(root, 'images/train2017',
                             'annotations/person_keypoints_train2017.json', data_fields=FIELDS,
                             load_crowd=True)
    crowd = [r for r in with_crowd.records if r['is_crowd'].any()]
    assert len(crowd) == 1 and isinstance(crowd[0]['gt_poly'][int(np.argmax(crowd[0]['is_crowd']))], dict)


@needs_shared
def test_eval_records_hold_no_ground_truth():
    root = os.path.join(SHARED_DATA, 'coco_person60')
    ds = COCODataSet(root, 'images/val2017', 'annotations/person_keypoints_val2017.json')
    assert len(ds) > 0 and set(ds[0]) == {'im_file', 'im_id', 'h', 'w', 'ann_ids'}


# -- bad data -------------------------------------------------------------------------------
def make_coco(root, n_images=3):
    """A tiny valid COCO set: n 40x60 PNG images with one square each."""
    os.makedirs(root / 'images', exist_ok=True)
    os.makedirs(root / 'annotations', exist_ok=True)
    images, anns = [], []
    for i in range(1, n_images + 1):
        name = f'im{i}.png'
        cv2.imwrite(str(root / 'images' / name), np.full((40, 60, 3), 30 * i, np.uint8))
        images.append({'id': i, 'file_name': name, 'height': 40, 'width': 60})
        anns.append({'id': 10 + i, 'image_id': i, 'category_id': 3, 'iscrowd': 0, 'area': 100,
                     'bbox': [5, 5, 10, 10], 'segmentation': [[5, 5, 15, 5, 15, 15, 5, 15]]})
    return {'images': images, 'annotations': anns,
            'categories': [{'id': 3, 'name': 'box'}, {'id': 1, 'name': 'other'}]}


def write(root, coco):
    path = root / 'annotations' / 'train.json'
    path.write_text(json.dumps(coco))
    return path


def dataset(root):
    return COCODataSet(str(root), 'images', 'annotations/train.json', data_fields=FIELDS)


def test_valid_set_maps_categories_in_file_order(tmp_path):
    write(tmp_path, make_coco(tmp_path))
    ds = dataset(tmp_path)
    assert ds.problems == [] and len(ds) == 3
    assert ds.categories.catid2clsid == {3: 0, 1: 1} and ds.category_names == ['box', 'other']
    assert ds[0]['gt_class'].tolist() == [[0]]


def _set(coco, path, value):
    node = coco
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize('path, value, message', [
    (('annotations', 1, 'image_id'), 99, r'annotation 12: unknown image_id 99'),
    (('annotations', 1, 'category_id'), 7, r'annotation 12 \(image im2.png\): unknown category_id 7'),
    (('annotations', 1, 'segmentation'), [[5, 5, 15, 5]], r'annotation 12 .*2 point\(s\), needs at least 3'),
    (('annotations', 1, 'segmentation'), [[5, 5, 15, 5, 15, 15, 5]], r'annotation 12 .*odd number'),
    (('annotations', 1, 'segmentation'), {'size': [80, 60], 'counts': [2400, 2400]},
     r'annotation 12 .*RLE of size 80x60 on an image of 40x60'),
    (('annotations', 1, 'bbox'), [5, 5, float('nan'), 10], r'annotation 12 .*not 4 finite numbers'),
    (('annotations', 1, 'bbox'), [5, 5, -3, 10], r'annotation 12 .*negative size'),
    (('annotations', 1, 'segmentation'), 'abc', r'annotation 12 .*segmentation of type str'),
    (('images', 1, 'height'), 0, r'image im2.png: height/width 0/60 must be positive'),
])
def test_bad_annotation_is_one_named_problem(tmp_path, path, value, message):
    coco = make_coco(tmp_path)
    _set(coco, path, value)
    anno = write(tmp_path, coco)
    ds = dataset(tmp_path)
    assert len(ds.problems) == 1 and len(ds) == 2
    text = str(ds.problems[0])
    assert text.startswith(str(anno)) and '\n' not in text
    assert re.search(message, text), text


def test_missing_and_empty_image_files_are_problems(tmp_path):
    write(tmp_path, make_coco(tmp_path))
    os.remove(tmp_path / 'images' / 'im1.png')
    (tmp_path / 'images' / 'im2.png').write_bytes(b'')
    problems = [str(p) for p in dataset(tmp_path).problems]
    assert any('im1.png not found' in p for p in problems)
    assert any('im2.png is empty (0 bytes)' in p for p in problems)


@pytest.mark.parametrize('text, message', [
    ('{"images": [{"id": 1, "file_na', r'train.json: not valid JSON .*line 1.*truncated'),
    ('[1, 2, 3]', r'train.json: not a COCO annotation file \(top level is a list'),
    ('{"images": []}', r'train.json: not a COCO annotation file \(no `categories` list\)'),
])
def test_broken_annotation_file_is_refused(tmp_path, text, message):
    make_coco(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text(text)
    with pytest.raises(DataError, match=message):
        dataset(tmp_path)


def test_annotation_id_zero_is_refused(tmp_path):
    coco = make_coco(tmp_path)
    coco['annotations'][0]['id'] = 0
    write(tmp_path, coco)
    with pytest.raises(DataError, match='annotation id 0 .*pycocotools.*renumber'):
        dataset(tmp_path)


def config(root, skip=False):
    return Config({'TrainDataset': {'name': 'COCODataSet', 'dataset_dir': str(root),
                                    'image_dir': 'images', 'anno_path': 'annotations/train.json',
                                    'data_fields': FIELDS},
                   'skip_bad_samples': skip})


def test_build_dataset_stops_on_bad_data_unless_skipping(tmp_path, caplog):
    coco = make_coco(tmp_path, 4)
    coco['annotations'][0]['category_id'] = 42
    write(tmp_path, coco)
    # image 2 is smaller than declared; image 3 is a truncated JPEG under a .png name
    cv2.imwrite(str(tmp_path / 'images' / 'im2.png'), np.zeros((20, 60, 3), np.uint8))
    ok, jpeg = cv2.imencode('.jpg', np.random.default_rng(0).integers(0, 255, (40, 60, 3),
                                                                        dtype=np.uint8))
    (tmp_path / 'images' / 'im3.png').write_bytes(jpeg.tobytes()[:600])
    with pytest.raises(DataError) as err:
        build_dataset(config(tmp_path), 'train')
    message = str(err.value)
    assert 'annotation 11' in message and 'unknown category_id 42' in message
    assert 'and 2 more problem(s)' in message and 'skip_bad_samples' in message

    ds = build_dataset(config(tmp_path, skip=True), 'train')
    assert [os.path.basename(r['im_file']) for r in ds.records] == ['im4.png']
    logged = caplog.text
    assert 'im2.png: image is 20x60 but the annotation file declares 40x60' in logged
    assert 'im3.png: truncated JPEG' in logged


def test_image_folder_single_folder_and_list(tmp_path):
    make_coco(tmp_path)
    folder = ImageFolder(str(tmp_path), anno_path='annotations/none.json')
    folder.set_images(str(tmp_path / 'images'))
    assert [os.path.basename(r['im_file']) for r in folder.records] == ['im1.png', 'im2.png',
                                                                         'im3.png']
    assert folder.category_names == [] and int(folder[2]['im_id'][0]) == 2
    write(tmp_path, make_coco(tmp_path))
    named = ImageFolder(str(tmp_path), anno_path='annotations/train.json')
    named.set_images([str(tmp_path / 'images' / 'im2.png')])
    assert len(named) == 1 and named.category_names == ['box', 'other']
    with pytest.raises(DataError, match='nope.jpg: image file or folder not found'):
        named.set_images('nope.jpg')


@pytest.mark.parametrize('section, message', [
    ('{name: COCODataSet, anno_pth: a.json}', r'd.yml.*`anno_pth`.*did you mean `anno_path`'),
    ('{name: COCODataset, anno_path: a.json}', r'd.yml.*`COCODataset`.*did you mean `COCODataSet`'),
])
def test_dataset_section_typos_are_refused_at_load(tmp_path, section, message):
    from ppdet.core.errors import ConfigError
    from ppdet.core.workspace import load_config
    path = tmp_path / 'd.yml'
    path.write_text(f'TrainDataset: {section}\n')
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_header_check_sees_exif_rotation_and_size_mismatch(tmp_path):
    from PIL import Image
    from ppdet.data import check_images
    coco = make_coco(tmp_path, 2)
    exif = Image.Exif()
    exif[0x0112] = 6                                       # stored 60x40, shown 40x60
    Image.new('RGB', (40, 60)).save(tmp_path / 'images' / 'im1.jpg', exif=exif)
    coco['images'][0]['file_name'] = 'im1.jpg'             # declared 40 high, 60 wide: matches
    coco['images'][1]['height'] = 400                      # im2.png is really 40x60
    write(tmp_path, coco)
    ds = dataset(tmp_path)
    problems = [str(p) for p in check_images(ds)]
    assert len(problems) == 1 and 'im2.png: image is 40x60 but the annotation file declares ' \
                                  '400x60' in problems[0] and '(image id 2)' in problems[0]
    assert [os.path.basename(r['im_file']) for r in ds.records] == ['im1.jpg']


def test_compressed_rle_counts_decode_to_the_run_lengths():
    from pycocotools import mask as mask_util
    from ppdet.data.source.coco import _compressed_rle_counts
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (7, 5), (40, 64)]:
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        text = mask_util.encode(np.asfortranarray(mask))['counts'].decode()
        flat = mask.flatten(order='F')
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])) != 0)
        runs = np.diff(np.concatenate([[0], edges]))
        runs = runs[runs > 0].tolist() if flat[0] == 0 else [0] + runs[runs > 0].tolist()
        assert _compressed_rle_counts(text) == runs
        assert sum(_compressed_rle_counts(text)) == h * w
    assert _compressed_rle_counts('0!') is None


def test_categories_keep_file_order_and_every_name(tmp_path):
    from ppdet.data import Categories
    categories = Categories.from_coco([{'id': 7, 'name': 'a'}, {'id': 3, 'name': 'a'},
                                       {'id': 5}])
    assert categories.names == ('a', 'a', '5') and len(categories) == 3
    assert categories.catid2clsid == {7: 0, 3: 1, 5: 2}
    assert categories.clsid2catid == {0: 7, 1: 3, 2: 5}
    assert Categories.numbered(80).names[:2] == ('person', 'bicycle')
    assert Categories.numbered(3) == Categories((0, 1, 2), ('class0', 'class1', 'class2'))


def test_results_are_named_by_the_test_annotations_or_numbered(tmp_path):
    from ppdet.data import test_categories
    write(tmp_path, make_coco(tmp_path))
    section = {'name': 'ImageFolder', 'dataset_dir': str(tmp_path)}
    named = test_categories(Config({'TestDataset': {**section, 'anno_path': 'annotations/train.json'},
                                    'num_classes': 2}))
    assert named.names == ('box', 'other') and named.ids == (3, 1)
    numbered = test_categories(Config({'TestDataset': {**section, 'anno_path': 'none.json'},
                                       'num_classes': 2}))
    assert numbered.names == ('class0', 'class1') and numbered.ids == (0, 1)


def test_one_image_extension_list_for_infer_folders_and_the_deploy_copy(tmp_path):
    import infer
    from conftest import import_deploy_predictor
    from ppdet.data.source.image_folder import IMAGE_EXTENSIONS
    for name in ('a.webp', 'b.TIF', 'c.jpg', 'notes.txt'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'd.png').mkdir()                        # a folder, not an image
    listed = [os.path.basename(p) for p in infer.collect_images(None, str(tmp_path))]
    assert listed == ['a.webp', 'b.TIF', 'c.jpg']
    assert import_deploy_predictor().IMAGE_EXTS == IMAGE_EXTENSIONS
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DataError, match='empty: folder holds no image'):
        infer.collect_images(None, str(empty))
