"""The SOLOv2 instance-segmentation model: backbone -> FPN -> SOLOv2 head + mask head."""
import paddle.nn as nn

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import REGISTRY, create, register
from ..target_batch import SOLOv2Targets

__all__ = ['SOLOv2']


def _component_name(section, key):
    value = section.get(key)
    if not isinstance(value, str):
        raise ConfigError(f'SOLOv2.{key} must name a registered component, got {value!r}')
    return value


@register
class SOLOv2(nn.Layer):
    """``forward(batch)``: the loss dict in training mode, the detections in eval mode.

    The state_dict prefixes (``backbone.``, ``neck.``, ``solov2_head.``, ``mask_head.``) are
    the reference's, so official weights load unchanged.
    """

    def __init__(self, backbone, neck, solov2_head, mask_head):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.solov2_head = solov2_head
        self.mask_head = mask_head

    @classmethod
    def from_config(cls, cfg, **kwargs):
        section = cfg.get('SOLOv2') or {}
        backbone = create(_component_name(section, 'backbone'), cfg)
        neck = create(_component_name(section, 'neck'), cfg, input_shape=backbone.out_shape)
        heads = {key: create(_component_name(section, key), cfg, input_shape=neck.out_shape)
                 for key in ('solov2_head', 'mask_head')}
        return dict(backbone=backbone, neck=neck, **heads)

    @classmethod
    def grids_from_config(cls, cfg):
        """The grids of the head this config builds (see ``SOLOv2Head.grids_from_config``)."""
        section = cfg.get(cls.__name__)
        name = section.get('solov2_head') if isinstance(section, dict) else None
        from_config = getattr(REGISTRY.get(name) if isinstance(name, str) else None,
                              'grids_from_config', None)
        return from_config(cfg) if from_config is not None else None

    @property
    def grids(self):
        return self.solov2_head.grids

    @property
    def thresholds(self):
        """What turns scores into detections (:class:`PredictionThresholds`)."""
        return self.solov2_head.thresholds

    def extract(self, image):
        """-> (category logits, kernels, mask features), the raw network outputs."""
        feats = self.neck(self.backbone(image))
        mask_feat = self.mask_head(feats)
        cate_logits, kernels = self.solov2_head(feats)
        return cate_logits, kernels, mask_feat

    def forward(self, batch):
        if self.training:
            return self.get_loss(batch)
        return self.predict(batch['image'], batch['im_shape'], batch['scale_factor'])

    def get_loss(self, batch):
        targets = SOLOv2Targets.from_batch(batch, self.grids.num_levels)
        cate_logits, kernels, mask_feat = self.extract(batch['image'])
        return self.solov2_head.get_loss(cate_logits, kernels, mask_feat, targets)

    def predict(self, image, im_shape, scale_factor):
        """Eval / export entry: tensors in, the detection dict out (see docs/architecture.md)."""
        cate_logits, kernels, mask_feat = self.extract(image)
        return self.solov2_head.get_prediction(cate_logits, kernels, mask_feat, im_shape,
                                               scale_factor)
