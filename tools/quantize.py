"""Post-training int8 quantization of an exported model's ONNX graph, calibrated on images.

    python tools/quantize.py --model_dir output_inference/quickstart \\
        --calib_dir dataset/quickstart/train [--calib_images 32] [--output_dir DIR]

Writes ``<model_dir>_int8/`` (or ``--output_dir``): ``model.onnx`` with int8 convolutions and
the export's ``infer_cfg.yml``; run it with ``deploy/python/infer.py --backend onnx``. Static
quantization with onnxruntime: the graph is optimised first (batch norms folded into the
convolutions), then every convolution gets per-channel int8 weights and uint8 activations
whose ranges come from the calibration images, preprocessed exactly as the predictor does.
Everything else, Matrix NMS and the mask resizing included, stays float32.

``--reduce_range True`` (default) keeps the weights to 7 bits: CPUs without VNNI (AVX2 only,
e.g. AMD Zen 2) multiply uint8 by int8 through 16-bit sums that saturate with full-range
weights. On CPUs with VNNI (AVX-512 VNNI, AVX-VNNI) ``--reduce_range False`` is a little more
accurate. Check the accuracy on your data with ``benchmarks/bench_precision.py``.
"""
import argparse
import glob
import importlib.util
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'deploy', 'python'))

import yaml  # noqa: E402

from ppdet.core.errors import ConfigError, DataError, ExportError  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402
from flags import str2bool  # noqa: E402  (deploy/python/flags.py)

__all__ = ['quantize', 'calibration_images']

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
# the calibrator keeps every convolution's outputs of this many images before reducing them
FLUSH_EVERY = 4


def calibration_images(folder, count):
    files = sorted(p for p in glob.glob(os.path.join(folder, '*'))
                   if p.lower().endswith(IMAGE_EXTS))
    if not files:
        raise DataError(f'{folder}: no calibration images ({", ".join(IMAGE_EXTS)})')
    return files[:count]


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over preprocessed images (batch 1), read
    in windows (``set_range``) so that the calibrator reduces what it collected after each."""

    def __init__(self, images, preprocess):
        self.images = list(images)
        self.preprocess = preprocess
        self.set_range(0, len(self.images))

    def __len__(self):
        return len(self.images)

    def set_range(self, start_index, end_index):
        self.pending = iter(self.images[start_index:end_index])

    def stride(self):
        return next(d for d in range(FLUSH_EVERY, 0, -1) if len(self.images) % d == 0)

    def get_next(self):
        from preprocess import collate, decode_image
        image = next(self.pending, None)
        if image is None:
            return None
        try:
            return collate([self.preprocess(decode_image(image))])
        except ValueError as e:
            raise DataError(str(e)) from e


def quantize(model_dir, images, output_dir, reduce_range=True, quant_format='qdq'):
    """Write the int8 model of ``model_dir`` to ``output_dir``, calibrated on ``images``
    (image files, or BGR arrays as OpenCV decodes them). Returns ``output_dir``."""
    if any(importlib.util.find_spec(m) is None for m in ('onnxruntime', 'ml_dtypes')):
        raise ConfigError('int8 quantization needs the export extras: '
                          'pip install -r requirements-export.txt')
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from preprocess import Preprocessor
    source = os.path.join(model_dir, 'model.onnx')
    cfg_file = os.path.join(model_dir, 'infer_cfg.yml')
    for path in (source, cfg_file):
        if not os.path.isfile(path):
            raise ConfigError(f'{path}: not found (export with tools/export_model.py --onnx)')
    with open(cfg_file) as f:
        cfg = yaml.safe_load(f)
    calibration = _Calibration(images, Preprocessor(cfg['Preprocess']))
    os.makedirs(output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        optimised = os.path.join(work, 'optimised.onnx')
        try:
            quant_pre_process(source, optimised, skip_symbolic_shape=True)
            quantize_static(
                optimised, os.path.join(output_dir, 'model.onnx'),
                calibration,
                quant_format=QuantFormat.QDQ if quant_format == 'qdq' else QuantFormat.QOperator,
                op_types_to_quantize=['Conv'], per_channel=True, reduce_range=reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={'CalibStridedMinMax': calibration.stride()})
        except (RuntimeError, ValueError) as e:     # onnxruntime's own failures
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise ExportError(f'{source}: quantization failed: {lines[-1]}') from e
    cfg['quantization'] = {'weights': 'int8 per channel' + ', 7 bits' * reduce_range,
                           'activations': 'uint8', 'format': quant_format,
                           'calibration_images': len(images)}
    with open(os.path.join(output_dir, 'infer_cfg.yml'), 'w') as f:
        yaml.safe_dump(cfg, f, sort_keys=False, default_flow_style=None)
    return output_dir


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', required=True, help='export folder with model.onnx')
    parser.add_argument('--calib_dir', required=True, help='folder of calibration images')
    parser.add_argument('--calib_images', type=int, default=32,
                        help='how many of its images (sorted by name) to use')
    parser.add_argument('--output_dir', default=None, help='default: <model_dir>_int8')
    parser.add_argument('--reduce_range', type=str2bool, default=True,
                        help='7-bit weights (default True; False only for CPUs with VNNI)')
    parser.add_argument('--format', choices=['qdq', 'qoperator'], default='qdq')
    parser.add_argument('--debug', action='store_true')
    args = parser.parse_args(argv)
    if args.calib_images < 1:
        parser.error('--calib_images must be at least 1')
    output_dir = args.output_dir or os.path.normpath(args.model_dir) + '_int8'
    if os.path.abspath(output_dir) == os.path.abspath(args.model_dir):
        raise ConfigError(f'{output_dir}: the int8 model needs a folder of its own')
    images = calibration_images(args.calib_dir, args.calib_images)
    created = not os.path.exists(output_dir)
    try:
        quantize(args.model_dir, images, output_dir, args.reduce_range, args.format)
    except BaseException:
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    print(f'int8 model written to {output_dir} (calibrated on {len(images)} images)')


if __name__ == '__main__':
    run_main(main)
