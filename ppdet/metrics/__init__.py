from .coco import (COCOMetric, encode_masks, to_records, evaluate_records,  # noqa: F401
                   evaluate_json, STAT_NAMES)
