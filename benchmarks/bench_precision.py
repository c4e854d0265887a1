"""Accuracy and speed of an exported model under each CPU runtime, on a COCO-format split.

    python benchmarks/bench_precision.py --model_dir output_inference/quickstart \\
        --anno dataset/quickstart/annotations/instances_val.json \\
        --image_dir dataset/quickstart/val [--paths paddle,paddle-bf16,onnx,onnx-int8] [--threads 1]

For each path: mask AP and AP50 (pycocotools), the detections that agree with the first path
(same label, mask IoU >= 0.5, greedy by score) and their mean mask IoU, and the median
milliseconds per image over the split. ``onnx-int8`` runs the model that tools/quantize.py
wrote to ``--int8_dir`` (default ``<model_dir>_int8``). Use it before deploying bfloat16 or
int8: both trade a little accuracy for speed, and how much depends on the model and the data.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'deploy', 'python'))

from infer import Detector, DeployError  # noqa: E402
from preprocess import decode_image  # noqa: E402
from ppdet.utils.cpuinfo import describe_cpu  # noqa: E402

PATHS = {
    'paddle': lambda a: Detector(a.model_dir, 'paddle', cpu_threads=a.threads),
    'paddle-bf16': lambda a: Detector(a.model_dir, 'paddle', cpu_threads=a.threads,
                                      enable_mkldnn_bfloat16=True),
    'paddle-native': lambda a: Detector(a.model_dir, 'paddle', cpu_threads=a.threads,
                                        enable_mkldnn=False),
    'onnx': lambda a: Detector(a.model_dir, 'onnx', cpu_threads=a.threads),
    'onnx-int8': lambda a: Detector(a.int8_dir, 'onnx', cpu_threads=a.threads),
}


def bfloat16_supported():
    import paddle
    return paddle.base.core.supports_bfloat16()


def run_split(detector, images):
    """Per-image results and the median ms per image (one image per call)."""
    results, times = [], []
    for path in images:
        image = decode_image(path)
        start = time.perf_counter()
        results.append(detector.predict([image])[0])
        times.append(1000 * (time.perf_counter() - start))
    return results, statistics.median(times)


def coco_records(results, image_ids, category_ids):
    from pycocotools import mask as mask_util
    records = []
    for image_id, det in zip(image_ids, results):
        for mask, label, score in zip(det['segm'], det['cate_label'], det['cate_score']):
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle['counts'] = rle['counts'].decode('ascii')
            records.append({'image_id': image_id, 'category_id': category_ids[int(label)],
                            'score': float(score), 'segmentation': rle})
    return records


def mask_ap(anno_file, records):
    """(AP, AP50) of the segm records; zeros when there are none."""
    if not records:
        return 0., 0.
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(anno_file)
        evaluation = COCOeval(gt, gt.loadRes(records), 'segm')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def agreement(results, baseline):
    """(matched detections, baseline detections, mean IoU of the matches) over the split."""
    matched, total, ious = 0, 0, []
    for det, base in zip(results, baseline):
        total += len(base['cate_label'])
        free = np.ones(len(det['cate_label']), bool)
        flat = det['segm'].reshape(len(det['segm']), -1).astype(bool)
        for mask, label in zip(base['segm'], base['cate_label']):
            target = mask.reshape(-1).astype(bool)
            inter = (flat & target).sum(1)
            union = (flat | target).sum(1)
            iou = np.where(free & (det['cate_label'] == label), inter / np.maximum(union, 1), 0.)
            best = int(iou.argmax()) if len(iou) else -1
            if best >= 0 and iou[best] >= 0.5:
                free[best] = False
                matched += 1
                ious.append(iou[best])
    return matched, total, float(np.mean(ious)) if ious else float('nan')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', required=True, help='export folder')
    parser.add_argument('--anno', required=True, help='COCO annotation file of the split')
    parser.add_argument('--image_dir', required=True, help='folder of the split\'s images')
    parser.add_argument('--paths', default='paddle,paddle-bf16,onnx,onnx-int8',
                        help=f'comma list of {", ".join(PATHS)}; the first is the reference '
                             'of the agreement columns')
    parser.add_argument('--int8_dir', default=None,
                        help='folder of tools/quantize.py (default: <model_dir>_int8)')
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)
    args.int8_dir = args.int8_dir or os.path.normpath(args.model_dir) + '_int8'
    with open(args.anno, encoding='utf-8') as f:
        coco = json.load(f)
    category_ids = [c['id'] for c in coco['categories']]
    images = [(im['id'], os.path.join(args.image_dir, im['file_name'])) for im in coco['images']]
    image_ids, files = [i for i, _ in images], [p for _, p in images]

    print(f'# {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {describe_cpu()}, '
          f'{len(files)} images, threads {args.threads}, load {os.getloadavg()[0]:.1f}')
    print('| path | mask AP | AP50 | detections | agree with first | mean IoU | ms/image |\n'
          '|---|---|---|---|---|---|---|')
    baseline = None
    for name in args.paths.split(','):
        if name == 'paddle-bf16' and not bfloat16_supported():
            print(f'| {name} | skipped: this CPU has no bfloat16 support | | | | | |')
            continue
        try:
            detector = PATHS[name](args)
        except DeployError as err:
            print(f'| {name} | skipped: {err} | | | | | |')
            continue
        results, ms = run_split(detector, files)
        ap, ap50 = mask_ap(args.anno, coco_records(results, image_ids, category_ids))
        baseline = baseline or results
        matched, total, iou = agreement(results, baseline)
        count = sum(len(r['cate_label']) for r in results)
        print(f'| {name} | {ap:.3f} | {ap50:.3f} | {count} | {matched}/{total} | {iou:.3f} | '
              f'{ms:.1f} |', flush=True)


if __name__ == '__main__':
    main()
