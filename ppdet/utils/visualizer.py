"""Drawing predicted masks, boxes and labels on an image."""
import colorsys

import cv2
import numpy as np

__all__ = ['colormap', 'draw_detections', 'frame_and_label']


def colormap(n=80):
    """``n`` well separated RGB colours (golden-ratio hues), the same on every run."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in hues]) * 255


def draw_detections(image, det, names, threshold=0.5):
    """``image`` (RGB uint8) with each detection of score >= ``threshold`` drawn on it.

    A mask is blended as ``0.3 * pixel + 0.7 * colour`` with a lightened colour, framed by
    its box and labelled ``"<name> <score>"``.
    """
    canvas = image.astype(np.float32)
    colors = colormap(max(len(det), 1))
    kept = det.above(threshold)
    h, w = canvas.shape[:2]
    for i, (mask, label, score, box) in enumerate(zip(kept.masks, kept.labels, kept.scores,
                                                      kept.boxes)):
        color = 0.6 * colors[i % len(colors)] + 0.4 * 255
        region = mask[:h, :w].astype(bool)
        canvas[:region.shape[0], :region.shape[1]][region] = (
            0.3 * canvas[:region.shape[0], :region.shape[1]][region] + 0.7 * color)
        frame_and_label(canvas, box, color, f'{names[int(label)]} {score:.2f}')
    return canvas.clip(0, 255).astype(np.uint8)


def frame_and_label(canvas, box, color, text):
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    c = tuple(float(v) for v in color)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), c, 1)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    top = max(y1 - th - base, 0)
    cv2.rectangle(canvas, (x1, top), (x1 + tw, top + th + base), c, -1)
    cv2.putText(canvas, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
