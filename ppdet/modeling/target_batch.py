"""The SOLOv2 training targets of a batch, as one typed value."""
from dataclasses import dataclass
from typing import List

import paddle

from ppdet.core.errors import DataError


@dataclass
class SOLOv2Targets:
    """Per FPN level ``l`` (lists), as made by the data pipeline's target generator.

    * ``cate_labels[l]``: ``[B, S_l²]`` int64, 0 = background, else class + 1.
    * ``ins_labels[l]``: ``[B, M_l, H/4, W/4]`` uint8 instance masks (padding rows are empty).
    * ``grid_orders[l]``: ``[B, M_l]`` int32, batch-flattened cell of each mask row
      (``b * S_l² + cell``); ``M_l`` may be 0.
    * ``fg_num``: ``[B]`` int64, positive cells per image.
    """
    cate_labels: List[paddle.Tensor]
    ins_labels: List[paddle.Tensor]
    grid_orders: List[paddle.Tensor]
    fg_num: paddle.Tensor

    KEYS = ('cate_label', 'ins_label', 'grid_order', 'fg_num')

    @classmethod
    def from_batch(cls, batch, num_levels):
        missing = [k for k in cls.KEYS if k not in batch]
        if missing:
            raise DataError(f'training batch lacks the SOLOv2 targets {", ".join(missing)} '
                            f'(is Gt2Solov2Target in TrainReader.batch_transforms?)')
        lists = [batch[k] for k in cls.KEYS[:3]]
        if any(not isinstance(v, (list, tuple)) or len(v) != num_levels for v in lists):
            raise DataError(f'SOLOv2 targets must be lists of {num_levels} levels (one per '
                            f'entry of SOLOv2Head.num_grids)')
        return cls(*[list(v) for v in lists], fg_num=batch['fg_num'])
