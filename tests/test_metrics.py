"""Streaming COCO metric: RLE records, per-image splitting, json files, --json_eval."""
import json

import numpy as np
import paddle
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ppdet.core.errors import DataError
from ppdet.metrics import COCOMetric, evaluate_json
from ppdet.modeling.detections import split_detections
from ppdet.modeling.ops import masks_to_boxes


def square(h, w, y0, x0, size):
    m = np.zeros((h, w), np.uint8)
    m[y0:y0 + size, x0:x0 + size] = 1
    return m


@pytest.fixture()
def gt_file(tmp_path):
    images = [{'id': 5, 'height': 40, 'width': 60, 'file_name': 'a.jpg'},
              {'id': 9, 'height': 30, 'width': 50, 'file_name': 'b.jpg'}]
    anns = []
    for i, (img, cat, (y, x, s)) in enumerate([(5, 7, (5, 5, 12)), (5, 3, (20, 30, 15)),
                                               (9, 3, (2, 2, 20))]):
        m = square(img == 5 and 40 or 30, img == 5 and 60 or 50, y, x, s)
        rle = mask_util.encode(np.asfortranarray(m))
        rle['counts'] = rle['counts'].decode()
        anns.append({'id': i + 1, 'image_id': img, 'category_id': cat, 'segmentation': rle,
                     'area': float(m.sum()), 'bbox': [x, y, s, s], 'iscrowd': 0})
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': [
        {'id': 7, 'name': 'square'}, {'id': 3, 'name': 'block'}]}))
    return str(path)


def batch_of_two():
    """Model outputs for both images in one batch (as the head makes them: boxes from the
    masks): masks on a 40x60 canvas, the second image's valid in its 30x50 top left."""
    masks = np.stack([square(40, 60, 5, 5, 12), square(40, 60, 20, 30, 14),
                      square(40, 60, 2, 2, 20), square(40, 60, 25, 40, 10)])
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.9, 0.7, 0.8, 0.3], np.float32)
    boxes = masks_to_boxes(paddle.to_tensor(masks.astype(bool))).numpy()
    outputs = {'segm': masks, 'cate_label': labels, 'cate_score': scores,
               'bbox': np.concatenate([labels[:, None], scores[:, None], boxes], 1),
               'bbox_num': np.array([2, 2], np.int32)}
    batch = {'im_id': np.array([[5], [9]]), 'im_shape': np.array([[80, 120], [60, 100]], 'f4'),
             'scale_factor': np.full((2, 2), 2.0, 'f4')}
    return batch, outputs


def test_split_crops_each_image_to_its_original_size():
    first, second = split_detections(*batch_of_two())
    assert (first.im_id, second.im_id) == (5, 9)
    assert first.masks.shape == (2, 40, 60) and second.masks.shape == (2, 30, 50)
    assert list(second.labels) == [1, 0] and second.scores[0] == pytest.approx(0.8)
    np.testing.assert_array_equal(first.boxes[0], [5, 5, 17, 17])
    np.testing.assert_array_equal(second.boxes[1], [40, 25, 50, 35])
    assert second.masks[1].sum() == 5 * 10            # the part inside the image
    assert len(second.above(0.5)) == 1


def test_metric_equals_pycocotools_on_the_written_json(gt_file, tmp_path):
    metric = COCOMetric(gt_file, classwise=True, output_eval=str(tmp_path / 'out'))
    metric.update(*batch_of_two())
    results = metric.accumulate()
    records = json.loads((tmp_path / 'out' / 'segm.json').read_text())
    assert {r['image_id'] for r in records} == {5, 9}
    assert sorted(r['category_id'] for r in records) == [3, 3, 7, 7]
    gt = COCO(gt_file)
    coco_eval = COCOeval(gt, gt.loadRes(records), 'segm')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert results['segm_AP'] == pytest.approx(coco_eval.stats[0])
    assert 0 < results['segm_AP'] < 1 and results['bbox_AP50'] == pytest.approx(1.0)
    again = evaluate_json(str(tmp_path / 'out'), gt_file)
    assert again['segm_AP'] == pytest.approx(results['segm_AP'])
    assert again['bbox_AP'] == pytest.approx(results['bbox_AP'])


def test_json_eval_without_files_is_a_clear_error(gt_file, tmp_path):
    with pytest.raises(DataError, match='no segm.json or bbox.json'):
        evaluate_json(str(tmp_path), gt_file)


def test_metric_holds_only_compact_records(gt_file):
    metric = COCOMetric(gt_file)
    metric.update(*batch_of_two())
    assert all(isinstance(r['segmentation']['counts'], str) for r in metric.records['segm'])
    assert len(metric.records['segm']) == 4
