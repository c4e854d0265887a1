"""Model components; importing this package registers them for the YAML workspace."""
from . import architectures, backbones, heads, layers, losses, necks  # noqa: F401
from .architectures.solov2 import SOLOv2  # noqa: F401
from .backbones.resnet import ResNet  # noqa: F401
from .heads.solov2_head import SOLOv2Head  # noqa: F401
from .heads.solov2_mask_head import SOLOv2MaskHead  # noqa: F401
from .layers.matrix_nms import MaskMatrixNMS  # noqa: F401
from .losses.solov2_loss import SOLOv2Loss  # noqa: F401
from .necks.fpn import FPN  # noqa: F401
from .detections import Detections, split_detections  # noqa: F401
from .grids import SOLOv2Grids  # noqa: F401
from .target_batch import SOLOv2Targets  # noqa: F401
