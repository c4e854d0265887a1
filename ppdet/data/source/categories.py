"""Categories: the model's contiguous class ids, the annotation file's category ids, and names."""
from dataclasses import dataclass

__all__ = ['Categories', 'COCO_NAMES']

COCO_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')


@dataclass(frozen=True)
class Categories:
    """Class ``i`` (what the model predicts) is category ``ids[i]`` of the annotation file,
    named ``names[i]``; classes follow the order of the file's ``categories`` list."""
    ids: tuple = ()
    names: tuple = ()

    @classmethod
    def from_coco(cls, entries):
        """From a COCO ``categories`` list whose ids are checked (see ``load_coco_json``)."""
        return cls(tuple(c['id'] for c in entries),
                   tuple(str(c.get('name', c['id'])) for c in entries))

    @classmethod
    def from_file(cls, path):
        from .coco import load_coco_json
        return cls.from_coco(load_coco_json(path)['categories'])

    @classmethod
    def numbered(cls, num_classes):
        """Without an annotation file: category id = class id, COCO's names for 80 classes,
        ``class<i>`` otherwise."""
        names = COCO_NAMES if num_classes == len(COCO_NAMES) else \
            tuple(f'class{i}' for i in range(num_classes))
        return cls(tuple(range(num_classes)), names)

    def __len__(self):
        return len(self.ids)

    @property
    def catid2clsid(self):
        return {catid: i for i, catid in enumerate(self.ids)}

    @property
    def clsid2catid(self):
        return dict(enumerate(self.ids))
