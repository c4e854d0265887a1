"""Run an exported SOLOv2 model on images or a video with Paddle Inference or onnxruntime.

Needs only the export folder (``model.json`` + ``model.pdiparams`` and/or ``model.onnx``,
``infer_cfg.yml``) and numpy, OpenCV, PyYAML and the chosen runtime; nothing from the training
code.

    python deploy/python/infer.py --model_dir output_inference/quickstart \\
        --image_dir demo/ --batch_size 2 --output_dir output --save_results
"""
import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:    # run through runpy or imported: find the sibling modules
    sys.path.append(HERE)

from flags import str2bool  # noqa: E402
from preprocess import Preprocessor, collate, decode_image  # noqa: E402
from visualize import draw_detections, to_records  # noqa: E402

# ppdet's IMAGE_EXTENSIONS, copied: the deploy predictor does not import ppdet
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
STAGES = ('preprocess', 'inference', 'postprocess')


class DeployError(Exception):
    """A wrong argument or export folder: reported as one line."""


def usable_cores():
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- runtimes

class PaddleRuntime:
    """Paddle Inference predictor: CPU (oneDNN optional) or GPU (TensorRT optional)."""

    def __init__(self, model_dir, device='cpu', cpu_threads=None, enable_mkldnn=True,
                 enable_mkldnn_bfloat16=False, run_mode='paddle', batch_size=1,
                 trt_min_shape=320, trt_max_shape=1344, trt_opt_shape=800,
                 min_subgraph_size=60):
        import paddle.inference as pi
        model = os.path.join(model_dir, 'model.json')
        if not os.path.isfile(model):
            raise DeployError(f'{model}: not found (export the model first)')
        config = pi.Config(model, os.path.join(model_dir, 'model.pdiparams'))
        if device == 'gpu':
            import paddle
            if not paddle.is_compiled_with_cuda():
                raise DeployError('--device gpu: this paddle build has no CUDA support')
            config.enable_use_gpu(256, 0)
            if run_mode != 'paddle':
                self._enable_tensorrt(config, pi, run_mode, batch_size, trt_min_shape,
                                      trt_max_shape, trt_opt_shape, min_subgraph_size)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads or usable_cores())
            if enable_mkldnn:
                config.enable_onednn()
                config.set_onednn_cache_capacity(10)
                # paddle 3.3.1: with oneDNN kernels the in-place pass corrupts results
                config.delete_pass('inplace_pass')
                if enable_mkldnn_bfloat16:
                    self._enable_bfloat16(config)
            else:
                config.disable_onednn()
        config.disable_glog_info()
        config.switch_ir_optim(True)
        self.predictor = pi.create_predictor(config)
        self.input_names = self.predictor.get_input_names()
        self.output_names = self.predictor.get_output_names()

    @staticmethod
    def _enable_bfloat16(config):
        """Convolutions in bfloat16; Matrix NMS and the mask resizing stay float32, where
        bfloat16 would round pixel counts and soft-mask values near the threshold. A CPU
        without bfloat16 instructions runs float32 (oneDNN would emulate bfloat16 slowly)."""
        import paddle
        if not paddle.base.core.supports_bfloat16():
            print('--enable_mkldnn_bfloat16: this CPU has no bfloat16 support (needs AVX-512 '
                  'BF16 or AMX); running float32', file=sys.stderr)
            return
        config.enable_onednn_bfloat16()
        config.set_bfloat16_op({'conv2d', 'fused_conv2d'})

    @staticmethod
    def _enable_tensorrt(config, pi, run_mode, batch_size, min_side, max_side, opt_side,
                         min_subgraph_size):
        precision = {'trt_fp32': pi.PrecisionType.Float32, 'trt_fp16': pi.PrecisionType.Half,
                     'trt_int8': pi.PrecisionType.Int8}[run_mode]
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=batch_size,
                                      min_subgraph_size=min_subgraph_size,
                                      precision_mode=precision, use_static=False,
                                      use_calib_mode=run_mode == 'trt_int8')
        shapes = [{'image': [b, 3, s, s], 'im_shape': [b, 2], 'scale_factor': [b, 2]}
                  for b, s in ((1, min_side), (batch_size, max_side), (batch_size, opt_side))]
        config.set_trt_dynamic_shape_info(*shapes)

    def __call__(self, feeds):
        for name in self.input_names:
            self.predictor.get_input_handle(name).copy_from_cpu(feeds[name])
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]


class OnnxRuntime:
    """onnxruntime session on ``model.onnx`` (CPU, or CUDA where that provider exists)."""

    def __init__(self, model_dir, device='cpu', cpu_threads=None, **_):
        import onnxruntime as ort
        path = os.path.join(model_dir, 'model.onnx')
        if not os.path.isfile(path):
            raise DeployError(f'{path}: not found (export with tools/export_model.py --onnx)')
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads or usable_cores()
        options.log_severity_level = 3      # no warning per unused initializer
        # the arena keeps (and grows) what the largest run needed; without it the peak RSS
        # at 800x1216 is a quarter lower, at the same speed
        options.enable_cpu_mem_arena = False
        providers = ['CPUExecutionProvider']
        if device == 'gpu':
            providers.insert(0, 'CUDAExecutionProvider')
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feeds):
        return self.session.run(None, {name: feeds[name] for name in self.input_names})


RUNTIMES = {'paddle': PaddleRuntime, 'onnx': OnnxRuntime}


# --------------------------------------------------------------------------- detector

class StageTimer:
    """Wall time per stage, summed, and the number of images it covered."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.images = 0

    def add(self, stage, seconds):
        self.seconds[stage] += seconds

    def per_image_ms(self):
        return {s: 1000 * t / max(self.images, 1) for s, t in self.seconds.items()}


class Detector:
    """Preprocess -> exported program -> per-image results, with stage timings."""

    def __init__(self, model_dir, backend='paddle', **runtime_args):
        cfg_path = os.path.join(model_dir, 'infer_cfg.yml')
        if not os.path.isfile(cfg_path):
            raise DeployError(f'{cfg_path}: not found (is --model_dir an export folder?)')
        with open(cfg_path) as f:
            self.cfg = yaml.safe_load(f)
        self.labels = self.cfg.get('label_list', [])
        self.output_names = self.cfg['outputs']
        self.preprocess = Preprocessor(self.cfg['Preprocess'])
        if backend == 'paddle':
            runtime_args.setdefault('min_subgraph_size', self.cfg.get('min_subgraph_size', 60))
        self.runtime = RUNTIMES[backend](model_dir, **runtime_args)
        self.timer = StageTimer()

    def predict(self, images):
        """Detections for a list of RGB uint8 images: one dict of arrays per image, masks at
        the image's own size (``segm [n, h, w] uint8``, ``cate_label``, ``cate_score``,
        ``bbox [n, 6]``: label, score, x1, y1, x2, y2)."""
        start = time.perf_counter()
        samples = [self.preprocess(image) for image in images]
        feeds = collate(samples)
        mid = time.perf_counter()
        outputs = dict(zip(self.output_names, self.runtime(feeds)))
        end = time.perf_counter()
        results = split_batch(outputs, [info['orig_hw'] for _, info in samples])
        self.timer.add('preprocess', mid - start)
        self.timer.add('inference', end - mid)
        self.timer.add('postprocess', time.perf_counter() - end)
        self.timer.images += len(images)
        return results


def split_batch(outputs, sizes):
    """Per-image results from the batch outputs (``bbox_num`` rows each), masks cropped (or
    zero-padded) to each image's ``(h, w)``. (ppdet's split_detections does this in the
    toolkit; the deploy predictor does not import ppdet.)"""
    bounds = np.concatenate([[0], np.cumsum(outputs['bbox_num'])]).astype(int)
    results = []
    for (begin, end), (h, w) in zip(zip(bounds[:-1], bounds[1:]), sizes):
        segm = outputs['segm'][begin:end, :h, :w]
        if segm.shape[1:] != (h, w):
            segm = np.pad(segm, ((0, 0), (0, h - segm.shape[1]), (0, w - segm.shape[2])))
        results.append({'segm': segm, 'cate_label': outputs['cate_label'][begin:end],
                        'cate_score': outputs['cate_score'][begin:end],
                        'bbox': outputs['bbox'][begin:end]})
    return results


# --------------------------------------------------------------------------- inputs / outputs

def list_images(image_file, image_dir):
    if image_file:
        if not os.path.isfile(image_file):
            raise DeployError(f'{image_file}: not found')
        return [image_file]
    files = sorted(p for p in glob.glob(os.path.join(image_dir, '*'))
                   if p.lower().endswith(IMAGE_EXTS))
    if not files:
        raise DeployError(f'{image_dir}: no images ({", ".join(IMAGE_EXTS)})')
    return files


def shape_batches(paths, size):
    """``(paths, decoded images)`` batches of up to ``size`` images of one size each.

    SOLOv2's grids and group norms span the whole padded input, so an image batched with a
    larger one would be padded further and detected differently; batches of equal sizes give
    the detections of one image at a time.
    """
    pending = {}
    for path in paths:
        image = decode_image(path)
        group = pending.setdefault(image.shape, ([], []))
        group[0].append(path)
        group[1].append(image)
        if len(group[0]) == size:
            yield pending.pop(image.shape)
    yield from pending.values()


def run_images(detector, paths, args):
    threshold = detector.cfg['draw_threshold'] if args.threshold is None else args.threshold
    records, seconds = [], 0.
    for group, images in shape_batches(paths, args.batch_size):
        if args.run_benchmark:
            benchmark(detector, images, args.warmup, args.repeats)
        start = time.perf_counter()
        detections = detector.predict(images)
        seconds += time.perf_counter() - start
        for path, image, det in zip(group, images, detections):
            name = os.path.basename(path)
            records.extend(to_records(name, det, detector.labels, threshold))
            drawn = draw_detections(image[:, :, ::-1], det, detector.labels, threshold)
            cv2.imwrite(os.path.join(args.output_dir, name), drawn)
            print(f'{path}: {int((det["cate_score"] >= threshold).sum())} detections '
                  f'(score >= {threshold})')
    print(f'{len(paths)} images, batch size {args.batch_size}: {len(paths) / seconds:.2f} '
          'images/s (decoded image to results)')
    if args.save_results:
        order = {os.path.basename(p): i for i, p in enumerate(paths)}
        records.sort(key=lambda r: order[r['image']])
        path = os.path.join(args.output_dir, 'results.json')
        with open(path, 'w') as f:
            json.dump(records, f)
        print(f'results written to {path}')


def run_video(detector, args):
    capture = cv2.VideoCapture(args.video_file)
    if not capture.isOpened():
        raise DeployError(f'{args.video_file}: cannot be opened as a video')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    stem = os.path.splitext(os.path.basename(args.video_file))[0]
    out_path = os.path.join(args.output_dir, stem + '.mp4')
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
    threshold = detector.cfg['draw_threshold'] if args.threshold is None else args.threshold
    frames, count = [], 0
    while True:
        ok, frame = capture.read()
        if ok:
            frames.append(frame)
        if frames and (len(frames) == args.batch_size or not ok):
            results = detector.predict([decode_image(f) for f in frames])
            for frame_bgr, det in zip(frames, results):
                writer.write(draw_detections(frame_bgr, det, detector.labels, threshold))
            count += len(frames)
            frames = []
        if not ok:
            break
    capture.release()
    writer.release()
    print(f'{count} frames written to {out_path}')


def benchmark(detector, images, warmup, repeats):
    """Time ``repeats`` runs on ``images`` after ``warmup`` untimed ones; print ms per image."""
    for _ in range(warmup):
        detector.predict(images)
    detector.timer.reset()
    for _ in range(repeats):
        detector.predict(images)
    ms = detector.timer.per_image_ms()
    print(f'batch of {len(images)}, {warmup} warm-up + {repeats} timed runs, ms per image: '
          + ', '.join(f'{s} {ms[s]:.1f}' for s in STAGES)
          + f', total {sum(ms.values()):.1f}')
    detector.timer.reset()


# --------------------------------------------------------------------------- command line

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model_dir', required=True, help='export folder (infer_cfg.yml, model.*)')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--image_file')
    src.add_argument('--image_dir')
    src.add_argument('--video_file')
    p.add_argument('--backend', choices=sorted(RUNTIMES), default='paddle',
                   help='paddle: Paddle Inference; onnx: onnxruntime on model.onnx')
    p.add_argument('--device', choices=['cpu', 'gpu'], default='cpu')
    p.add_argument('--run_mode', choices=['paddle', 'trt_fp32', 'trt_fp16', 'trt_int8'],
                   default='paddle', help='GPU only: TensorRT precision')
    p.add_argument('--cpu_threads', type=int, default=None,
                   help='CPU threads (default: every usable core)')
    p.add_argument('--enable_mkldnn', type=str2bool, default=True,
                   help='use oneDNN kernels on CPU (default True)')
    p.add_argument('--enable_mkldnn_bfloat16', type=str2bool, default=False,
                   help='CPU, oneDNN: convolutions in bfloat16 (CPUs with AVX-512 BF16 / AMX)')
    p.add_argument('--batch_size', type=int, default=1,
                   help='images of one size (or video frames) per run of the program')
    p.add_argument('--trt_min_shape', type=int, default=320)
    p.add_argument('--trt_max_shape', type=int, default=1344)
    p.add_argument('--trt_opt_shape', type=int, default=800)
    p.add_argument('--threshold', type=float, default=None,
                   help='score threshold for drawing and results (default: draw_threshold)')
    p.add_argument('--output_dir', default='output')
    p.add_argument('--save_results', action='store_true', help='write results.json')
    p.add_argument('--run_benchmark', action='store_true',
                   help='print preprocess / inference / postprocess ms per image')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=10)
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error('--batch_size must be at least 1')
    if args.cpu_threads is not None and args.cpu_threads < 1:
        p.error('--cpu_threads must be at least 1')
    if args.enable_mkldnn_bfloat16 and (args.backend != 'paddle' or args.device != 'cpu' or
                                        not args.enable_mkldnn):
        p.error('--enable_mkldnn_bfloat16 needs --backend paddle, --device cpu and '
                '--enable_mkldnn True')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runtime_args = dict(device=args.device, cpu_threads=args.cpu_threads)
    if args.backend == 'paddle':
        runtime_args.update(enable_mkldnn=args.enable_mkldnn,
                            enable_mkldnn_bfloat16=args.enable_mkldnn_bfloat16,
                            run_mode=args.run_mode,
                            batch_size=args.batch_size, trt_min_shape=args.trt_min_shape,
                            trt_max_shape=args.trt_max_shape, trt_opt_shape=args.trt_opt_shape)
    try:
        detector = Detector(args.model_dir, args.backend, **runtime_args)
        os.makedirs(args.output_dir, exist_ok=True)
        if args.video_file:
            run_video(detector, args)
        else:
            run_images(detector, list_images(args.image_file, args.image_dir), args)
    except (DeployError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
