"""SOLOv2 losses: dice for the instance masks, sigmoid focal loss for the categories."""
import paddle
import paddle.nn.functional as F

from ppdet.core.workspace import register, serializable

__all__ = ['SOLOv2Loss', 'dice_loss', 'sigmoid_focal_loss']


def dice_loss(probs, targets, eps=0.001):
    """Per row of ``[M, P]``: ``1 - 2 Σpt / ((Σp² + eps) + (Σt² + eps))``."""
    inter = (probs * targets).sum(axis=1)
    return 1. - 2. * inter / ((probs * probs).sum(axis=1) + eps + (targets * targets).sum(axis=1)
                              + eps)


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise focal loss (Lin et al., 2017): ``α_t (1 - p_t)^γ BCE(x, y)``."""
    probs = F.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = probs * targets + (1. - probs) * (1. - targets)
    alpha_t = alpha * targets + (1. - alpha) * (1. - targets)
    return alpha_t * (1. - p_t) ** gamma * ce


@register
@serializable
class SOLOv2Loss:
    """``loss_ins``: dice loss averaged over mask rows with at least one positive pixel, times
    ``ins_loss_weight``. ``loss_cate``: focal loss summed over all cells and classes, divided
    by (number of positive cells + 1). Computed in float32.
    """

    def __init__(self, ins_loss_weight=3.0, focal_loss_gamma=2.0, focal_loss_alpha=0.25):
        self.ins_loss_weight = ins_loss_weight
        self.focal_loss_gamma = focal_loss_gamma
        self.focal_loss_alpha = focal_loss_alpha

    def instance_loss(self, mask_logits, mask_targets):
        """``[M, P]`` logits and 0/1 targets -> weighted dice loss (0 when no row is positive)."""
        targets = mask_targets.astype('float32')
        weights = (targets.sum(axis=1) > 0).astype('float32')
        dice = dice_loss(F.sigmoid(mask_logits.astype('float32')), targets)
        return self.ins_loss_weight * (dice * weights).sum() / paddle.clip(weights.sum(), min=1.)

    def category_loss(self, cate_logits, cate_labels, num_positive):
        """``[N, C]`` logits, ``[N]`` labels (0 = background, else class + 1)."""
        num_classes = cate_logits.shape[1]
        onehot = F.one_hot(cate_labels.astype('int64'), num_classes + 1)[:, 1:]
        loss = sigmoid_focal_loss(cate_logits.astype('float32'), onehot,
                                  self.focal_loss_alpha, self.focal_loss_gamma)
        return loss.sum() / (num_positive.astype('float32') + 1.)

    def __call__(self, mask_logits, mask_targets, cate_logits, cate_labels, num_positive):
        loss_ins = self.instance_loss(mask_logits, mask_targets)
        loss_cate = self.category_loss(cate_logits, cate_labels, num_positive)
        return {'loss': loss_ins + loss_cate, 'loss_ins': loss_ins, 'loss_cate': loss_cate}
