"""Drawing detections on images and writing them as COCO-style JSON records."""
import cv2
import numpy as np

__all__ = ['draw_detections', 'mask_to_rle', 'to_records']


def _palette(n):
    """``n`` distinct BGR colours, the same for a given class on every run."""
    hues = (np.arange(n) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], 1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0].astype(np.float32)


def draw_detections(image_bgr, det, labels, threshold, alpha=0.5):
    """A copy of ``image_bgr`` with the masks, boxes and ``label score`` of ``det`` drawn."""
    out = image_bgr.astype(np.float32)
    keep = det['cate_score'] >= threshold
    colours = _palette(max(len(labels), 1))
    for mask, label in zip(det['segm'][keep], det['cate_label'][keep]):
        m = mask.astype(bool)
        out[m] = out[m] * (1 - alpha) + colours[label % len(colours)] * alpha
    out = out.astype(np.uint8)
    for (label, score, x1, y1, x2, y2) in det['bbox'][keep]:
        colour = tuple(int(c) for c in colours[int(label) % len(colours)])
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, 2)
        name = labels[int(label)] if int(label) < len(labels) else str(int(label))
        cv2.putText(out, f'{name} {score:.2f}', (int(x1), max(int(y1) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return out


def mask_to_rle(mask):
    """COCO uncompressed RLE (column-major run lengths, starting with zeros) of a 0/1 mask.
    (The toolkit encodes with pycocotools, which the deploy predictor does not need.)"""
    flat = mask.astype(bool).ravel(order='F')
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {'size': list(mask.shape), 'counts': counts}


def to_records(name, det, labels, threshold):
    """JSON-ready records (box as x, y, w, h) of the detections scored ``>= threshold``."""
    records = []
    for mask, (label, score, x1, y1, x2, y2) in zip(det['segm'], det['bbox']):
        if score < threshold:
            continue
        label = int(label)
        records.append({
            'image': name, 'category_id': label,
            'category': labels[label] if label < len(labels) else str(label),
            'score': round(float(score), 5),
            'bbox': [round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)],
            'segmentation': mask_to_rle(mask)})
    return records
