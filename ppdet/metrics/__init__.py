from .coco import (COCOMetric, Detections, split_outputs, encode_masks, to_records,  # noqa: F401
                   evaluate_records, evaluate_json, load_categories, STAT_NAMES)
