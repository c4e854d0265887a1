from .coco import COCODataSet, load_coco_json
from .image_folder import ImageFolder
from .quickstart import QuickStartDataSet, generate_quickstart

__all__ = ['COCODataSet', 'ImageFolder', 'QuickStartDataSet', 'generate_quickstart',
           'load_coco_json']
