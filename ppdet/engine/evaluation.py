"""COCO evaluation of a detector over a loader."""
import os

__all__ = ['evaluate', 'eval_anno_file']


def eval_anno_file(cfg):
    """The EvalDataset's annotation file (categories and ground truth of the metric)."""
    section = cfg['EvalDataset']
    return os.path.join(section.get('dataset_dir', ''), section['anno_path'])


def evaluate(detect, loader, metric, main_process=True):
    """Feed ``metric`` the detections ``detect(image, im_shape, scale_factor)`` of every batch;
    its results. The main process shows progress and writes the metric's files."""
    from tqdm import tqdm
    for batch in tqdm(loader, desc='eval', disable=not main_process, leave=False):
        metric.update(batch, detect(batch['image'], batch['im_shape'], batch['scale_factor']))
    return metric.accumulate(write=main_process)
