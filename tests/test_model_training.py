"""Training behaviour of a small SOLOv2: it overfits one batch, and survives empty batches."""
import numpy as np
import paddle
import pytest

from ppdet.modeling import FPN, ResNet, SOLOv2, SOLOv2Head, SOLOv2MaskHead

GRIDS = [12, 10, 8, 6, 4]


def small_model(num_classes=3):
    paddle.seed(0)
    backbone = ResNet(depth=18, freeze_at=-1, freeze_norm=False)
    neck = FPN(**FPN.from_config(None, backbone.out_shape), out_channel=64)
    head = SOLOv2Head(num_classes=num_classes, in_channels=64, seg_feat_channels=64,
                      stacked_convs=2, num_grids=GRIDS, kernel_out_channels=64)
    return SOLOv2(backbone, neck, head, SOLOv2MaskHead(in_channels=64, mid_channels=32,
                                                       out_channels=64))


def make_batch(instances, size=128):
    """Images with coloured boxes and their SOLOv2 targets, one positive cell per instance.

    ``instances[b]``: list of (level, class, y0, x0, y1, x1) in pixels.
    """
    rng = np.random.RandomState(0)
    batch_size = len(instances)
    image = rng.standard_normal((batch_size, 3, size, size)).astype('float32') * 0.1
    cate = [np.zeros((batch_size, s * s), 'int64') for s in GRIDS]
    rows = [[[] for _ in range(batch_size)] for _ in GRIDS]
    for b, boxes in enumerate(instances):
        for level, cls, y0, x0, y1, x1 in boxes:
            image[b, cls, y0:y1, x0:x1] += 1.5
            grid = GRIDS[level]
            cell = ((y0 + y1) // 2 * grid // size) * grid + (x0 + x1) // 2 * grid // size
            cate[level][b, cell] = cls + 1
            mask = np.zeros((size // 4, size // 4), 'uint8')
            mask[y0 // 4:y1 // 4, x0 // 4:x1 // 4] = 1
            rows[level][b].append((b * grid * grid + cell, mask))
    ins_label, grid_order = [], []
    for level_rows in rows:
        count = max(len(r) for r in level_rows)
        masks = np.zeros((batch_size, count, size // 4, size // 4), 'uint8')
        order = np.zeros((batch_size, count), 'int32')
        for b, entries in enumerate(level_rows):
            for m, (cell, mask) in enumerate(entries):
                order[b, m], masks[b, m] = cell, mask
        ins_label.append(paddle.to_tensor(masks))
        grid_order.append(paddle.to_tensor(order))
    return {'image': paddle.to_tensor(image),
            'im_shape': paddle.to_tensor([[size, size]] * batch_size, 'float32'),
            'scale_factor': paddle.ones([batch_size, 2]),
            'im_id': paddle.arange(batch_size).reshape([-1, 1]),
            'cate_label': [paddle.to_tensor(c) for c in cate], 'ins_label': ins_label,
            'grid_order': grid_order,
            'fg_num': paddle.to_tensor([len(boxes) for boxes in instances], 'int64')}


INSTANCES = [[(0, 0, 10, 15, 30, 40), (2, 1, 50, 45, 100, 95), (1, 2, 20, 75, 55, 115)],
             [(3, 0, 30, 10, 125, 90)]]


def test_loss_halves_when_overfitting_one_batch():
    model = small_model()
    batch = make_batch(INSTANCES[:1])
    optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    model.train()
    losses = []
    for _ in range(20):
        loss = model(batch)['loss']
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses[::10]


def test_batch_without_any_positive_instance_trains():
    model = small_model()
    batch = make_batch([[], []])
    assert all(g.shape[1] == 0 for g in batch['grid_order'])
    model.train()
    out = model(batch)
    assert all(np.isfinite(float(v)) for v in out.values())
    assert float(out['loss_ins']) == 0
    out['loss'].backward()
    grad = model.solov2_head.solo_cate.weight.grad
    assert grad is not None and np.isfinite(grad.numpy()).all()


def test_missing_targets_are_reported():
    from ppdet.core.errors import DataError
    model = small_model()
    batch = make_batch(INSTANCES)
    del batch['grid_order']
    model.train()
    with pytest.raises(DataError, match='grid_order'):
        model(batch)
