"""What a model costs: parameters per module (trainable / frozen) and FLOPs for one image.

    python tools/model_stats.py -c configs/solov2/solov2_r50_fpn_1x_coco.yml --input_size 800 1333

Parameters are counted once each: the state_dict's alias keys (``solov2_head.solo_kernel.*``,
``mask_head.conv_pred.*``) share storage with their primary keys and are not counted twice.
BatchNorm running statistics (``_mean`` / ``_variance``) are stored as parameters by Paddle but
are not learned; they are listed apart.

FLOPs use the per-layer counters of Paddle's FLOPs tool (``paddle.flops``; one multiply-add
counts as one FLOP) on the network's forward pass (backbone, FPN, both heads), attributed to
the module that runs them, with GroupNorm counted like BatchNorm. What those counters do not
cover is listed, not guessed: layer types without a counter (deformable convolution, upsampling)
and everything outside the layers (post-processing: dynamic mask kernels, Matrix NMS, mask
pasting).
"""
import collections
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppdet  # noqa: E402,F401  (before paddle: its filters hide paddle's start-up notices)
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402
from paddle.hapi.dynamic_flops import count_bn, register_hooks  # noqa: E402

from ppdet.core.errors import ConfigError  # noqa: E402
from ppdet.core.workspace import create  # noqa: E402
from ppdet.modeling.layers.drop_block import DropBlock  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main  # noqa: E402

__all__ = ['ParamCount', 'FlopCount', 'count_parameters', 'count_flops', 'padded_size']

PAD_STRIDE = 32
FLOP_COUNTERS = {**register_hooks, nn.GroupNorm: count_bn}
# Layers that do no arithmetic at inference; anything else without a counter is reported.
ZERO_COST = (nn.ReLU, nn.Dropout, nn.Identity, DropBlock)


@dataclasses.dataclass
class ParamCount:
    trainable: int = 0
    frozen: int = 0          # learnable but stop_gradient (freeze_at, freeze_norm, lr 0)
    running_stats: int = 0   # BatchNorm _mean / _variance

    @property
    def learnable(self):
        return self.trainable + self.frozen

    def __add__(self, other):
        return ParamCount(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                  dataclasses.astuple(other))))


@dataclasses.dataclass
class FlopCount:
    per_module: dict           # top-level module name -> FLOPs
    uncounted: dict            # layer type name -> number of layers without a counter

    @property
    def total(self):
        return sum(self.per_module.values())


def _running_stat_ids(model):
    return {id(p) for layer in model.sublayers(include_self=True)
            if isinstance(layer, nn.layer.norm._BatchNormBase)
            for p in (layer._mean, layer._variance)}


def count_parameters(model):
    """``{module name: ParamCount}`` for each direct child of ``model``, and ``'total'``."""
    stats = _running_stat_ids(model)
    counts = {}
    for name, module in [*model.named_children(), ('total', model)]:
        count = ParamCount()
        for param in module.parameters():      # deduplicated: aliases count once
            n = int(param.size)
            if id(param) in stats:
                count.running_stats += n
            elif param.stop_gradient:
                count.frozen += n
            else:
                count.trainable += n
        counts[name] = count
    return counts


def padded_size(h, w, stride=PAD_STRIDE):
    """The network input for an image resized to ``h x w`` (PadBatch pads to the stride)."""
    return -(-h // stride) * stride, -(-w // stride) * stride


def _leaf_layers(model):
    for name, module in model.named_children():
        for layer in module.sublayers(include_self=True):
            if not list(layer.children()):
                yield name, layer


def count_flops(model, input_hw):
    """FLOPs of ``model.extract`` for one ``[1, 3, H, W]`` input, per top-level module."""
    per_module = collections.Counter({name: 0 for name, _ in model.named_children()})
    uncounted = collections.Counter()
    handles = []

    def hook_for(module_name, counter):
        def hook(layer, inputs, output):
            layer.total_ops = 0
            counter(layer, inputs, output)
            per_module[module_name] += int(layer.total_ops)
            del layer.total_ops
        return hook

    for module_name, layer in _leaf_layers(model):
        # a subclass of a counted layer (e.g. a conv with its own training path) counts like it
        counter = next((FLOP_COUNTERS[c] for c in type(layer).__mro__ if c in FLOP_COUNTERS),
                       None)
        if counter is not None:
            handles.append(layer.register_forward_post_hook(hook_for(module_name, counter)))
        elif not isinstance(layer, ZERO_COST):
            uncounted[type(layer).__name__] += 1
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model.extract(paddle.zeros([1, 3, *input_hw], 'float32'))
    finally:
        for handle in handles:
            handle.remove()
        if was_training:
            model.train()
    return FlopCount(dict(per_module), dict(uncounted))


def _format_params(counts):
    rows = [f'{"module":<14}{"trainable":>14}{"frozen":>12}{"learnable":>14}{"BN stats":>11}']
    for name, c in counts.items():
        if name == 'total':
            rows.append('-' * len(rows[0]))
        rows.append(f'{name:<14}{c.trainable:>14,}{c.frozen:>12,}{c.learnable:>14,}'
                    f'{c.running_stats:>11,}')
    return '\n'.join(rows)


def _format_flops(flops):
    rows = [f'{name:<14}{n / 1e9:>10.2f} G' for name, n in flops.per_module.items()]
    rows.append('-' * 26)
    rows.append(f'{"total":<14}{flops.total / 1e9:>10.2f} G')
    return '\n'.join(rows)


def _left_out(flops):
    layers = ', '.join(f'{name} ({n} layer{"s" * (n > 1)})'
                       for name, n in sorted(flops.uncounted.items()))
    return ('Not counted: ' + (f'layers without a Paddle FLOPs counter: {layers}; ' if layers
                               else '') +
            'element-wise ops outside layers (additions, F.relu, CoordConv channels, '
            'interpolations); post-processing (dynamic mask kernels over up to pre_nms_top_n '
            'candidates, Matrix NMS, pasting masks to the image size).')


def main(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--input_size', type=int, nargs=2, default=[800, 1333],
                        metavar=('H', 'W'), help='resized image size (height width) for FLOPs')
    args = parser.parse_args(argv)
    h, w = args.input_size
    if h <= 0 or w <= 0:
        raise ConfigError(f'--input_size {h} {w}: both sides must be positive')
    cfg = load_cli_config(args)
    model = create(cfg.get('architecture', 'SOLOv2'), cfg)
    print(f'{cfg["filename"]} ({cfg.get("architecture", "SOLOv2")}): parameters (elements)')
    print(_format_params(count_parameters(model)))
    ph, pw = padded_size(h, w)
    flops = count_flops(model, (ph, pw))
    print(f'\nFLOPs for one {h}x{w} image (network input padded to {ph}x{pw}; '
          f'1 multiply-add = 1 FLOP)')
    print(_format_flops(flops))
    print(_left_out(flops))


if __name__ == '__main__':
    run_main(main)
