"""Images for inference: one file, a folder, or a list of them."""
import logging
import os

import numpy as np

from ppdet.core.errors import DataError
from ppdet.core.workspace import register

from .categories import Categories

__all__ = ['ImageFolder', 'IMAGE_EXTENSIONS', 'list_images']

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def list_images(path):
    """``path`` itself if it is a file, else the folder's image files (by extension), sorted so
    that every run numbers them the same way."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(path, n)))
        if not names:
            raise DataError(f'{path}: folder holds no image ({", ".join(IMAGE_EXTENSIONS)})')
        return [os.path.join(path, n) for n in names]
    if not os.path.isfile(path):
        raise DataError(f'{path}: image file or folder not found')
    return [path]


@register
class ImageFolder:
    """Inference images; ``im_id`` is the position in the list.

    Category names come from the COCO file ``dataset_dir/anno_path`` when it exists; otherwise
    (a warning says so) the categories are empty and the caller names the classes.
    """

    def __init__(self, dataset_dir=None, image_dir=None, anno_path=None, sample_num=-1):
        self.dataset_dir = dataset_dir or ''
        self.anno_path = os.path.join(self.dataset_dir, anno_path) if anno_path else None
        self.sample_num = sample_num
        self.problems = []
        self.categories = Categories()
        if self.anno_path and os.path.isfile(self.anno_path):
            self.categories = Categories.from_file(self.anno_path)
        elif self.anno_path:
            logger.warning('%s not found: the classes get default names', self.anno_path)
        self.records = []
        if image_dir:
            self.set_images(os.path.join(self.dataset_dir, image_dir))

    @property
    def category_names(self):
        return list(self.categories.names)

    @property
    def image_files(self):
        return [record['im_file'] for record in self.records]

    def set_images(self, images):
        """Use ``images``: a path (file or folder) or a list of paths."""
        paths = [images] if isinstance(images, str) else list(images)
        files = [f for path in paths for f in list_images(path)]
        if self.sample_num > 0:
            files = files[:self.sample_num]
        self.records = [{'im_file': f, 'im_id': np.array([i], np.int64)}
                        for i, f in enumerate(files)]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return dict(self.records[index])
