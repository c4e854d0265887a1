"""tools/quantize.py: int8 convolutions calibrated on images, everything else float32, run by
the deploy predictor."""
import collections
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, import_deploy_predictor
from fixtures.detections import confident_ious
from fixtures.seeded_quickstart import synthetic_images

pytest.importorskip('onnxruntime.quantization')
infer = import_deploy_predictor()
sys.path.append(os.path.join(ROOT, 'tools'))   # after deploy/python: tools/ has an infer.py
import quantize  # noqa: E402


@pytest.fixture(scope='module')
def int8_dir(exported, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('int8') / 'quickstart_int8')
    images = [image[:, :, ::-1] for image in synthetic_images()]        # BGR, as decoded
    return quantize.quantize(exported[0], images * 2, folder)


def test_only_the_convolutions_are_quantized(int8_dir):
    import onnx
    graph = onnx.load(os.path.join(int8_dir, 'model.onnx')).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    producers = {out: node for node in graph.node for out in node.output}
    convs = [node for node in graph.node if node.op_type == 'Conv']
    assert convs and ops['QuantizeLinear'] > 0
    # every convolution reads dequantized int8 input and weights
    assert all(producers[name].op_type == 'DequantizeLinear' for conv in convs
               for name in conv.input[:2])
    # Matrix NMS and the mask products stay float32
    assert ops['MatMul'] > 0
    assert not {'MatMulInteger', 'QLinearMatMul', 'QLinearConv'} & set(ops)


def test_int8_model_runs_in_the_predictor_and_finds_the_float32_detections(exported,  # noqa: F811
                                                                            int8_dir):
    images = exported[2]
    fp32 = infer.Detector(exported[0], 'onnx').predict(images)
    int8 = infer.Detector(int8_dir, 'onnx').predict(images)
    assert not all(np.array_equal(a['cate_score'], b['cate_score']) for a, b in zip(fp32, int8))
    found = confident = 0
    for want, got in zip(fp32, int8):
        assert got['segm'].shape[1:] == want['segm'].shape[1:]
        ious = confident_ious(want, got)
        confident += len(ious)
        found += sum(iou >= 0.5 for iou in ious)
    assert confident >= 2 and found >= 0.8 * confident


def run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'quantize.py'), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_folder_without_onnx_model_is_one_line_error(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    cv2.imwrite(str(images / 'a.png'), np.zeros((32, 32, 3), np.uint8))
    proc = run_tool('--model_dir', str(tmp_path), '--calib_dir', str(images))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error')]
    assert errors == [f'error: {tmp_path / "model.onnx"}: not found (export with '
                      'tools/export_model.py --onnx)']
    assert not (tmp_path.parent / (tmp_path.name + '_int8')).exists()


def test_empty_calibration_folder_is_one_line_error(exported, tmp_path):  # noqa: F811
    proc = run_tool('--model_dir', exported[0], '--calib_dir', str(tmp_path))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error')]
    assert len(errors) == 1 and errors[0].startswith(f'error: {tmp_path}: no calibration images')
