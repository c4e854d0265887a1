"""Streaming COCO evaluation of instance masks (segm) and their boxes (bbox).

Each image's masks are RLE-encoded as soon as they are predicted, so only compact records
are held for the whole set.  With several processes, each evaluates its share of images and
the records are gathered on every rank before pycocotools scores them.
"""
import contextlib
import io
import json
import logging
import os

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ppdet.core.errors import DataError
from ppdet.data.source.categories import Categories
from ppdet.modeling.detections import split_detections

__all__ = ['COCOMetric', 'encode_masks', 'to_records', 'evaluate_records', 'evaluate_json',
           'STAT_NAMES']

logger = logging.getLogger(__name__)

STAT_NAMES = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl']
RESULT_FILES = {'segm': 'segm.json', 'bbox': 'bbox.json'}


def encode_masks(masks):
    """RLE of each ``[h, w]`` uint8 mask, counts as text (COCO results format)."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for rle in rles:
        rle['counts'] = rle['counts'].decode('ascii')
    return rles


def to_records(det, clsid2catid):
    """``{'segm': [...], 'bbox': [...]}`` COCO result records of one image."""
    catids = [clsid2catid[int(c)] for c in det.labels]
    scores = [float(s) for s in det.scores]
    segm = [{'image_id': det.im_id, 'category_id': c, 'segmentation': rle, 'score': s}
             for c, rle, s in zip(catids, encode_masks(det.masks), scores)]
    xywh = np.concatenate([det.boxes[:, :2], det.boxes[:, 2:] - det.boxes[:, :2]], axis=1)
    bbox = [{'image_id': det.im_id, 'category_id': c, 'bbox': [round(float(v), 2) for v in b],
             'score': s} for c, b, s in zip(catids, xywh, scores)]
    return {'segm': segm, 'bbox': bbox}


def _quiet(fn, *args):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    return result, buffer.getvalue()


def evaluate_records(anno_file, records, iou_type, classwise=False):
    """pycocotools COCOeval of ``records``: ``(12 stats, summary text, per-class AP)``."""
    if not records:
        return None, f'no {iou_type} predictions to evaluate', {}
    gt, _ = _quiet(COCO, anno_file)
    dt, _ = _quiet(gt.loadRes, records)
    coco_eval = COCOeval(gt, dt, iou_type)
    _quiet(coco_eval.evaluate)
    _quiet(coco_eval.accumulate)
    _, summary = _quiet(coco_eval.summarize)
    per_class = {}
    if classwise:
        precision = coco_eval.eval['precision'][:, :, :, 0, -1]   # iou, recall, class; all, 100
        for k, catid in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k]
            name = gt.loadCats(int(catid))[0]['name']
            per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else float('nan')
    return [float(s) for s in coco_eval.stats], summary, per_class


def classwise_table(per_class, columns=3):
    items = [(name, f'{ap:.3f}') for name, ap in per_class.items()]
    width = max([len(n) for n, _ in items] + [8])
    cells = [f'{n:<{width}} {a:>6}' for n, a in items]
    rows = [' | '.join(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    header = ' | '.join([f'{"category":<{width}} {"AP":>6}'] * min(columns, len(cells)))
    return '\n'.join([header, '-' * len(header)] + rows)


def _report(anno_file, records_by_type, classwise):
    results = {}
    for iou_type, records in records_by_type.items():
        stats, summary, per_class = evaluate_records(anno_file, records, iou_type, classwise)
        if stats is None:
            logger.warning(summary)
            continue
        logger.info(f'{iou_type} AP (COCO, {len(records)} predictions):\n{summary.rstrip()}')
        if per_class:
            logger.info(f'{iou_type} AP per category:\n{classwise_table(per_class)}')
        results.update({f'{iou_type}_{name}': s for name, s in zip(STAT_NAMES, stats)})
    return results


def evaluate_json(output_eval, anno_file, classwise=False):
    """Score the ``segm.json`` / ``bbox.json`` found in ``output_eval`` (``--json_eval``)."""
    records = {}
    for iou_type, name in RESULT_FILES.items():
        path = os.path.join(output_eval, name)
        if os.path.isfile(path):
            try:
                with open(path, encoding='utf-8') as f:
                    records[iou_type] = json.load(f)
            except ValueError as e:
                raise DataError(f'{path}: not a COCO results file ({e})') from e
    if not records:
        raise DataError(f'{output_eval}: no segm.json or bbox.json to evaluate (--json_eval)')
    return _report(anno_file, records, classwise)


class COCOMetric:
    """Accumulates predictions batch by batch; :meth:`accumulate` scores them."""

    def __init__(self, anno_file, classwise=False, output_eval=None):
        self.anno_file = anno_file
        self.clsid2catid = Categories.from_file(anno_file).clsid2catid
        self.classwise = classwise
        self.output_eval = output_eval
        self.reset()

    def reset(self):
        self.records = {'segm': [], 'bbox': []}

    def update(self, batch, outputs):
        for det in split_detections(batch, outputs):
            for iou_type, recs in to_records(det, self.clsid2catid).items():
                self.records[iou_type].extend(recs)

    def _gathered(self):
        import paddle.distributed as dist
        if dist.get_world_size() < 2:
            return self.records
        parts = []
        dist.all_gather_object(parts, self.records)
        # a rank-split sampler pads with repeated images: keep each image from one rank only
        owner = {}
        for rank, part in enumerate(parts):
            for record in part['segm'] + part['bbox']:
                owner.setdefault(record['image_id'], rank)
        return {t: [r for rank, part in enumerate(parts) for r in part[t]
                    if owner[r['image_id']] == rank] for t in self.records}

    def accumulate(self, write=True):
        """Gather, write ``segm.json``/``bbox.json`` (with ``output_eval``), evaluate."""
        records = self._gathered()
        if write and self.output_eval:
            os.makedirs(self.output_eval, exist_ok=True)
            for iou_type, name in RESULT_FILES.items():
                with open(os.path.join(self.output_eval, name), 'w', encoding='utf-8') as f:
                    json.dump(records[iou_type], f)
            logger.info(f'results written to {self.output_eval}/segm.json and bbox.json')
        return _report(self.anno_file, records, self.classwise)
