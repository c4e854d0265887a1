"""Inference on image files: detections, drawings, COCO result files and a threshold log.

Detections come from one callable, ``detect(image, im_shape, scale_factor) -> outputs`` (the
model's eval outputs, see docs/architecture.md); :class:`EagerDetector` runs the model, and a
runner of an exported program can stand in for it.
"""
import json
import logging
import os
from dataclasses import dataclass

import paddle

from ppdet.core.errors import ConfigError, DataError
from ppdet.modeling.detections import split_detections

from .amp import autocast

__all__ = ['EagerDetector', 'Predictor']

logger = logging.getLogger('ppdet')


class EagerDetector:
    """``model.predict`` without gradients, in eval mode (the model's mode is restored after),
    under the AMP settings."""

    def __init__(self, model, amp=None):
        self.model, self.amp = model, amp

    @paddle.no_grad()
    def __call__(self, image, im_shape, scale_factor):
        training = self.model.training
        self.model.eval()
        try:
            with autocast(self.amp):
                return self.model.predict(image, im_shape, scale_factor)
        finally:
            if training:
                self.model.train()


@dataclass
class _Tally:
    """Counts over the images of a run, for the log."""
    images: int = 0
    above_score: int = 0
    candidates: int = 0
    detected: int = 0
    drawn: int = 0
    reported: bool = True       # every image said what passed the model's thresholds

    def add(self, det, drawn):
        self.images += 1
        self.reported &= det.num_above_score is not None and det.num_candidates is not None
        if self.reported:
            self.above_score += det.num_above_score
            self.candidates += det.num_candidates
        self.detected += len(det)
        self.drawn += drawn

    def summary(self, thresholds, draw_threshold):
        found = thresholds.funnel(self.above_score, self.candidates, self.detected) \
            if self.reported and thresholds is not None else f'{self.detected} detections'
        return (f'{self.images} images: {found}; {self.drawn} drawn, '
                f'{self.detected - self.drawn} below draw_threshold {draw_threshold}')


class Predictor:
    """Runs ``detect`` on the images of a loader (its dataset lists their files).

    ``categories``: the :class:`Categories` of the classes (names for drawings, category ids
    for results); ``thresholds``: the model's :class:`PredictionThresholds`, for the log.
    """

    def __init__(self, detect, categories, thresholds=None, show_progress=True):
        self.detect, self.categories, self.thresholds = detect, categories, thresholds
        self.show_progress = show_progress

    def __call__(self, loader):
        """The :class:`Detections` of every image of ``loader``, in order."""
        from tqdm import tqdm
        for batch in tqdm(loader, desc='infer', disable=not self.show_progress):
            outputs = self.detect(batch['image'], batch['im_shape'], batch['scale_factor'])
            yield from split_detections(batch, outputs)

    def predict(self, loader, output_dir, draw_threshold=0.5, save_results=False,
                visualize=True):
        """Draw each image's detections scoring at least ``draw_threshold`` into
        ``output_dir`` (``visualize``) and write ``segm.json`` / ``bbox.json``
        (``save_results``); returns those records."""
        from ppdet.metrics import to_records
        _prepare_output(output_dir)
        files = loader.dataset.image_files
        records, tally = {'segm': [], 'bbox': []}, _Tally()
        for det in self(loader):
            if save_results:
                for iou_type, recs in to_records(det, self.categories.clsid2catid).items():
                    records[iou_type].extend(recs)
            tally.add(det, len(det.above(draw_threshold)))
            if visualize:
                self._draw(files[det.im_id], det, draw_threshold, output_dir)
        logger.info(tally.summary(self.thresholds, draw_threshold))
        if visualize:
            logger.info(f'visualisations written to {output_dir}/')
        if save_results:
            for iou_type, recs in records.items():
                with open(os.path.join(output_dir, f'{iou_type}.json'), 'w',
                          encoding='utf-8') as f:
                    json.dump(recs, f)
            logger.info(f'results written to {output_dir}/segm.json and bbox.json '
                        f'(image_id = index in the sorted image list)')
        return records

    def _draw(self, path, det, threshold, output_dir):
        import cv2
        from ppdet.utils.visualizer import draw_detections
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f'{path}: cannot read the image')
        drawn = draw_detections(image[:, :, ::-1], det, self.categories.names, threshold)
        cv2.imwrite(os.path.join(output_dir, os.path.basename(path)), drawn[:, :, ::-1])


def _prepare_output(output_dir):
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f'{output_dir}: cannot create the output folder ({e.strerror})') from e
    if not os.access(output_dir, os.W_OK):
        raise ConfigError(f'{output_dir}: the output folder is not writable')
