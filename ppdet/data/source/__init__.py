from .categories import Categories
from .coco import COCODataSet, load_coco_json
from .image_folder import IMAGE_EXTENSIONS, ImageFolder, list_images
from .quickstart import QuickStartDataSet, generate_quickstart

__all__ = ['Categories', 'COCODataSet', 'ImageFolder', 'IMAGE_EXTENSIONS', 'list_images',
           'QuickStartDataSet', 'generate_quickstart', 'load_coco_json']
