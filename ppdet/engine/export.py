"""Export an evaluation model for deployment: a static program plus ``infer_cfg.yml``.

The exported program takes ``image [B,3,H,W]``, ``im_shape [B,2]`` and ``scale_factor [B,2]``
and returns the model's final outputs (masks, labels, scores, boxes, counts) in the order of
:data:`OUTPUT_NAMES`; ``infer_cfg.yml`` records that order, the preprocessing and the labels,
so that ``deploy/python/infer.py`` needs nothing else. The per-detection outputs have one spare
row after the ``sum(bbox_num)`` detections (see :func:`spare_detection_row`).

Paddle 3.3.1 cannot run any ``*_interp`` operator under oneDNN (its ``scale`` attribute, a
double array, is rejected by the oneDNN instruction), and the ONNX converter rejects interp
operators whose scale is given as a factor. While tracing, :func:`export_safe_interpolate`
therefore routes ``paddle.nn.functional.interpolate`` to ordinary operators that compute the
same values: an index gather (nearest) or a product with the interpolation matrix (bilinear).
"""
import contextlib
import importlib.util
import json
import os
import subprocess
import sys

import paddle
import paddle.nn.functional as F
import yaml
from paddle.static import InputSpec

from ppdet.core.errors import ConfigError, ExportError
from ppdet.data import test_categories
from ppdet.modeling.ops import bilinear_matrix

__all__ = ['OUTPUT_NAMES', 'ExportModel', 'input_spec', 'export_safe_interpolate',
           'spare_detection_row', 'export_model', 'infer_config', 'export_onnx']

OUTPUT_NAMES = ('segm', 'cate_label', 'cate_score', 'bbox', 'bbox_num')
MODEL_FILE = 'model.json'
PARAMS_FILE = 'model.pdiparams'
ONNX_FILE = 'model.onnx'
INFER_CFG_FILE = 'infer_cfg.yml'


class ExportModel(paddle.nn.Layer):
    """``model.predict`` as a forward that returns a tuple of ``outputs`` (by default
    :data:`OUTPUT_NAMES`), in that order."""

    def __init__(self, model, outputs=OUTPUT_NAMES):
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def forward(self, image, im_shape, scale_factor):
        out = self.model.predict(image, im_shape, scale_factor)
        return tuple(out[name] for name in self.outputs)


def input_spec():
    return [InputSpec([None, 3, None, None], 'float32', 'image'),
            InputSpec([None, 2], 'float32', 'im_shape'),
            InputSpec([None, 2], 'float32', 'scale_factor')]


# --------------------------------------------------------------------------- interpolation

def _as_pair(value):
    return list(value) if isinstance(value, (list, tuple)) else [value, value]


def _as_float(value):
    return float(value) if isinstance(value, (int, float)) else paddle.cast(value, 'float32')


def _bilinear_axis(x, axis, in_size, out_size, scale, align_corners, align_mode):
    """Resize along ``axis`` (2 or 3) as a product with the ``[out, in]`` interpolation matrix:
    under oneDNN a product is far faster than gathers blended by broadcast weights."""
    matrix = bilinear_matrix(in_size, out_size, align_corners=align_corners,
                             align_mode=align_mode, scale=scale)[0]
    # 2-D products only: paddle 3.3.1 under oneDNN computed the broadcast product with a 4-D
    # [B, C, H, W] operand wrongly inside the model
    if axis == 2:
        x = x.transpose([0, 1, 3, 2])
    shape = paddle.shape(x)
    out = paddle.matmul(x.reshape([-1, shape[3]]), matrix, transpose_y=True)
    out = out.reshape(paddle.concat([shape[:3], paddle.shape(out)[1:]]))
    return out.transpose([0, 1, 3, 2]) if axis == 2 else out


def _nearest_axis(x, axis, in_size, out_size, scale):
    dst = paddle.arange(out_size, dtype='float32')
    ratio = 1.0 / scale if scale else _as_float(in_size) / _as_float(out_size)
    index = paddle.minimum(paddle.cast(paddle.floor(dst * ratio), 'int64'),
                           paddle.cast(in_size, 'int64') - 1)
    return paddle.gather(x, index, axis=axis)


def safe_interpolate(x, size=None, scale_factor=None, mode='nearest', align_corners=False,
                     align_mode=0, data_format=None, recompute_scale_factor=None,
                     antialias=False, name=None):
    """``F.interpolate`` for 4-D NCHW input with gathers or matrix products (same values).

    Other layouts, modes and options go to paddle's own operator.
    """
    if (data_format not in (None, 'NCHW') or len(x.shape) != 4 or antialias
            or recompute_scale_factor or mode not in ('nearest', 'bilinear')
            or (mode == 'nearest' and align_corners)):
        return _ORIGINAL_INTERPOLATE(x, size, scale_factor, mode, align_corners, align_mode,
                                     data_format, recompute_scale_factor, antialias, name)
    in_shape = paddle.shape(x)
    if size is not None:
        if not isinstance(size, (list, tuple, int)) and len(size.shape) == 1:
            size = [size[0], size[1]]
        out_hw, scales = _as_pair(size), [None, None]
    else:
        scales = [float(s) for s in _as_pair(scale_factor)]
        out_hw = [paddle.cast(paddle.floor(paddle.cast(in_shape[2 + i], 'float32') * s), 'int64')
                  for i, s in enumerate(scales)]
    # width first, then height: the order (and so the rounding) of paddle's bilinear kernel
    for axis in (3, 2):
        i = axis - 2
        if mode == 'bilinear':
            x = _bilinear_axis(x, axis, in_shape[axis], out_hw[i], scales[i], align_corners,
                               align_mode)
        else:
            x = _nearest_axis(x, axis, in_shape[axis], out_hw[i], scales[i])
    return x


_ORIGINAL_INTERPOLATE = F.interpolate


@contextlib.contextmanager
def export_safe_interpolate():
    """Route ``paddle.nn.functional.interpolate`` to :func:`safe_interpolate` meanwhile."""
    modules = [paddle.nn.functional, paddle.nn.functional.common]
    saved = [m.interpolate for m in modules]
    for m in modules:
        m.interpolate = safe_interpolate
    try:
        yield
    finally:
        for m, fn in zip(modules, saved):
            m.interpolate = fn


@contextlib.contextmanager
def spare_detection_row(model):
    """Meanwhile, heads with a ``spare_row`` switch append one row after the detections.

    Rows are read by ``bbox_num``, so the spare row is never a detection; it keeps every tensor
    non-empty for a batch without detections, where oneDNN kernels would fail.
    """
    heads = [layer for layer in model.sublayers(include_self=True)
             if hasattr(layer, 'spare_row')]
    for head in heads:
        head.spare_row = True
    try:
        yield
    finally:
        for head in heads:
            del head.spare_row      # back to the class default


# --------------------------------------------------------------------------- export

def export_model(model, cfg, output_dir, onnx=False, opset=16, outputs=OUTPUT_NAMES):
    """Trace ``model`` (eval mode) and write the program, weights and ``infer_cfg.yml``.

    Returns the output folder. ``onnx=True`` also writes ``model.onnx`` (needs paddle2onnx).
    ``outputs``: the keys of ``model.predict`` the program returns, in order.
    """
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    with export_safe_interpolate(), spare_detection_row(model):
        static = paddle.jit.to_static(ExportModel(model, outputs), input_spec=input_spec(),
                                      full_graph=True)
        paddle.jit.save(static, os.path.join(output_dir, 'model'))
    with open(os.path.join(output_dir, INFER_CFG_FILE), 'w') as f:
        yaml.safe_dump(infer_config(model, cfg, outputs), f, sort_keys=False,
                       default_flow_style=None)
    if onnx:
        export_onnx(output_dir, opset=opset)
    return output_dir


def export_onnx(output_dir, opset=16):
    """Convert the exported program in ``output_dir`` to ``model.onnx`` with paddle2onnx."""
    if importlib.util.find_spec('paddle2onnx') is None:
        raise ConfigError('ONNX export needs paddle2onnx: pip install "ppdet-solov2[export]" '
                          '(or -r requirements-export.txt)')
    path = os.path.join(output_dir, ONNX_FILE)
    program = os.path.join(output_dir, MODEL_FILE)
    if os.path.exists(path):
        os.remove(path)
    # In a child process: a converter failure can abort the process, and its onnxruntime
    # threads keep spinning after it returns.
    proc = subprocess.run([sys.executable, '-c', _CONVERT, program,
                           os.path.join(output_dir, PARAMS_FILE), path, str(opset)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(path):
        lines = (proc.stderr.strip() or proc.stdout.strip() or 'no output').splitlines()
        raise ExportError(f'{program}: paddle2onnx failed (exit code {proc.returncode}): '
                          f'{lines[-1]}')
    _restore_group_norm_epsilons(path, program)
    return path


# optimize_tool='none': paddle2onnx's default constant folding (polygraphy) sets
# POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs packages at run time (it replaced numpy 1.x by
# 2.x in a fresh environment); onnxruntime folds constants itself when it loads the model.
_CONVERT = ('import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], sys.argv[3], '
            'opset_version=int(sys.argv[4]), enable_onnx_checker=True, verbose=False, '
            'optimize_tool="none")')


def _ops_named(node, name, found):
    """The operations ``name`` of a PIR program in its JSON form, in program order."""
    if isinstance(node, dict):
        if node.get('#') == name:
            found.append(node)
        for value in node.values():
            _ops_named(value, name, found)
    elif isinstance(node, list):
        for value in node:
            _ops_named(value, name, found)
    return found


def _restore_group_norm_epsilons(onnx_path, program_path):
    """paddle2onnx 2.1 reads the (double) epsilon of paddle 3.3 group_norm operators as
    garbage; it lowers each to an InstanceNormalization, in program order. Write back the
    program's values."""
    import onnx
    with open(program_path) as f:
        group_norms = _ops_named(json.load(f), '1.group_norm', [])
    epsilons = [next(a['AT']['D'] for a in op['A'] if a['N'] == 'epsilon')
                for op in group_norms]
    model = onnx.load(onnx_path)
    nodes = [n for n in model.graph.node if n.op_type == 'InstanceNormalization']
    if len(nodes) != len(epsilons):
        raise RuntimeError(f'{onnx_path}: {len(nodes)} InstanceNormalization nodes for '
                           f'{len(epsilons)} group_norm operators; cannot restore epsilons')
    for node, epsilon in zip(nodes, epsilons):
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute('epsilon', float(epsilon)))
    onnx.save(model, onnx_path)


def _preprocess_ops(cfg):
    reader = cfg.get('TestReader') or {}
    ops = []
    for op in reader.get('sample_transforms') or []:
        (name, params), = op.items()
        if name != 'Decode':
            ops.append({'type': name, **(params or {})})
    for op in reader.get('batch_transforms') or []:
        (name, params), = op.items()
        if name == 'PadBatch':
            ops.append({'type': 'PadStride', 'stride': (params or {}).get('pad_to_stride', 32)})
    if not any(op['type'] == 'Resize' for op in ops):
        raise ConfigError(f'{cfg.get("filename", "config")}: TestReader has no Resize transform '
                          'to export')
    return ops


def infer_config(model, cfg, outputs=OUTPUT_NAMES):
    """The ``infer_cfg.yml`` content: what the deploy predictor needs besides the program.

    Architecture name and thresholds are the built model's; preprocessing, draw threshold and
    labels come from the config."""
    thresholds = model.thresholds
    return {
        'mode': 'paddle',
        'arch': type(model).__name__,
        'metric': cfg.get('metric', 'COCO'),
        'mask': True,
        'use_dynamic_shape': True,
        'min_subgraph_size': 60,
        'draw_threshold': float(cfg.get('draw_threshold', 0.5)),
        'score_threshold': float(thresholds.score_threshold),
        'mask_threshold': float(thresholds.mask_threshold),
        'inputs': [spec.name for spec in input_spec()],
        'outputs': list(outputs),
        'Preprocess': _preprocess_ops(cfg),
        'label_list': list(test_categories(cfg).names),
    }
