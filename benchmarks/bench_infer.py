"""Per-image CPU latency of eager inference, the exported program in Paddle Inference, and ONNX.

    python benchmarks/bench_infer.py                       # the default cases below
    python benchmarks/bench_infer.py --case quickstart:256x256:10 --threads 2

A case is ``config:HxW:repeats`` (config = a name under configs/ or configs/solov2/). The image
is HxW and the test Resize targets HxW, so the network sees exactly that size. Weights: the
parity fixtures' seeded weights where ``../shared`` exists, else paddle's random init; either way
the category bias is raised so that post-processing has detections to work on.

Stages, the same for every path: *preprocess* (decoded image -> normalised, resized, padded
batch), *inference* (network, Matrix NMS and mask pasting: all inside the model / exported
program), *postprocess* (per-image numpy results, masks cropped to the image). Each path runs
``--warmup`` untimed runs, then ``repeats`` timed ones; medians are reported.
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'deploy', 'python'))

import paddle  # noqa: E402

from infer import STAGES, Detector, split_batch  # noqa: E402
from preprocess import Preprocessor, collate  # noqa: E402
from ppdet.core.config import load_config  # noqa: E402
from ppdet.core.workspace import create  # noqa: E402
from ppdet.engine.export import export_model  # noqa: E402

DEFAULT_CASES = ['quickstart:256x256:10', 'solov2_r50_fpn_1x_coco:512x512:3',
                 'solov2_r50_fpn_1x_coco:800x1216:1']
PARITY = os.path.join(ROOT, '..', 'shared', 'reference', 'parity')
CATEGORY_BIAS = -3.5


def config_path(name):
    for folder in ('configs', os.path.join('configs', 'solov2')):
        path = os.path.join(ROOT, folder, name + '.yml')
        if os.path.isfile(path):
            return path
    raise SystemExit(f'error: no config {name}.yml under configs/ or configs/solov2/')


def build(name):
    import ppdet.modeling  # noqa: F401
    cfg = load_config(config_path(name))
    paddle.seed(0)
    model = create(cfg.architecture, cfg)
    if os.path.isdir(PARITY):
        sys.path.insert(0, PARITY)
        import seeded_weights
        seeded_weights.apply_to_layer(model)
    bias = model.solov2_head.solo_cate.bias
    bias.set_value(paddle.full(bias.shape, CATEGORY_BIAS))
    model.eval()
    return cfg, model


def with_resize_target(cfg, hw):
    """``cfg`` whose test Resize targets ``hw`` (keep_ratio: an HxW image stays HxW)."""
    cfg = copy.deepcopy(cfg)
    for op in cfg['TestReader']['sample_transforms']:
        if 'Resize' in op:
            op['Resize'] = dict(op['Resize'], target_size=list(hw), keep_ratio=True)
    return cfg


class EagerDetector:
    """The dygraph model behind the deploy predictor's interface (same stages)."""

    def __init__(self, model, preprocess):
        self.model = model
        self.preprocess = preprocess
        self.timer = None

    def predict(self, images):
        start = time.perf_counter()
        samples = [self.preprocess(image) for image in images]
        feeds = {k: paddle.to_tensor(v) for k, v in collate(samples).items()}
        mid = time.perf_counter()
        with paddle.no_grad():
            out = self.model.predict(feeds['image'], feeds['im_shape'], feeds['scale_factor'])
        end = time.perf_counter()
        split_batch({k: v.numpy() for k, v in out.items()},
                    [info['orig_hw'] for _, info in samples])
        return {'preprocess': mid - start, 'inference': end - mid,
                'postprocess': time.perf_counter() - end}


def timed(detector, images):
    """Stage seconds of one ``detector.predict(images)`` call."""
    if isinstance(detector, EagerDetector):
        return detector.predict(images)
    detector.timer.reset()
    detector.predict(images)
    return dict(detector.timer.seconds)


def measure(detector, images, warmup, repeats):
    for _ in range(warmup):
        timed(detector, images)
    runs = [timed(detector, images) for _ in range(repeats)]
    return {s: 1000 * statistics.median(r[s] for r in runs) / len(images) for s in STAGES}


def run_case(case, args, workdir):
    name, size, repeats = case.split(':')
    hw = tuple(int(v) for v in size.lower().split('x'))
    cfg, model = build(name)
    cfg = with_resize_target(cfg, hw)
    out = os.path.join(workdir, f'{name}_{hw[0]}x{hw[1]}')
    start = time.perf_counter()
    export_model(model, cfg, out)
    if 'onnx' in args.paths:
        # in a child process: the converter's onnxruntime threads keep spinning afterwards
        # and would steal a core from the paths timed next
        subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'export_onnx.py'),
                        '--model_dir', out], check=True, capture_output=True)
    print(f'# {name} {hw[0]}x{hw[1]}: exported in {time.perf_counter() - start:.0f} s',
          flush=True)
    rng = np.random.RandomState(0)
    images = [(rng.rand(*hw, 3) * 255).astype(np.uint8) for _ in range(args.batch_size)]
    threads = args.threads
    detectors = {
        'paddle': lambda: Detector(out, 'paddle', cpu_threads=threads, enable_mkldnn=True),
        'paddle-bf16': lambda: Detector(out, 'paddle', cpu_threads=threads,
                                        enable_mkldnn_bfloat16=True),
        'paddle-native': lambda: Detector(out, 'paddle', cpu_threads=threads,
                                          enable_mkldnn=False),
        'onnx': lambda: Detector(out, 'onnx', cpu_threads=threads),
    }
    rows = []
    for path in args.paths:
        if path == 'eager':
            detector = EagerDetector(model, _preprocessor(out))
        else:
            detector = detectors[path]()
        ms = measure(detector, images, args.warmup, int(repeats))
        rows.append((name, f'{hw[0]}x{hw[1]}', path, ms, int(repeats)))
        print(format_row(rows[-1], rows[0][3]), flush=True)
        del detector
    return rows


def _preprocessor(export_dir):
    import yaml
    with open(os.path.join(export_dir, 'infer_cfg.yml')) as f:
        return Preprocessor(yaml.safe_load(f)['Preprocess'])


HEADER = ('| model | input | path | runs | preprocess ms | inference ms | postprocess ms | '
          'total ms | speed-up vs eager |\n|---|---|---|---|---|---|---|---|---|')


def format_row(row, eager_ms):
    name, size, path, ms, runs = row
    total = sum(ms.values())
    return (f'| {name} | {size} | {path} | {runs} | {ms["preprocess"]:.1f} | '
            f'{ms["inference"]:.1f} | {ms["postprocess"]:.1f} | {total:.1f} | '
            f'{sum(eager_ms.values()) / total:.2f}x |')


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        import platform
        return platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--case', action='append', help='config:HxW:repeats (repeatable)')
    parser.add_argument('--paths', default='eager,paddle,paddle-bf16,onnx',
                        help='comma list of eager, paddle (oneDNN), paddle-bf16 (oneDNN, '
                             'bfloat16 convolutions), paddle-native, onnx')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads of every path')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--batch_size', type=int, default=1)
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.paths = args.paths.split(',')
    if 'paddle-bf16' in args.paths and not paddle.base.core.supports_bfloat16():
        print('# paddle-bf16 skipped: this CPU has no bfloat16 support')
        args.paths.remove('paddle-bf16')
    paddle.base.core.set_num_threads(args.threads)
    if args.paths[0] != 'eager':
        parser.error('--paths must start with eager (the baseline of the speed-up column)')
    if args.child:
        with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, '.scratch')
                                         if os.path.isdir(os.path.join(ROOT, '.scratch'))
                                         else None) as workdir:
            run_case(args.case[0], args, workdir)
        return
    print(f'# {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {cpu_name()}, '
          f'{os.cpu_count()} CPUs, paddle {paddle.__version__}, threads {args.threads}, '
          f'batch {args.batch_size}, warm-up {args.warmup}, median ms per image')
    print(HEADER, flush=True)
    # One process per case, eager first in each: once a Paddle Inference predictor with
    # oneDNN has run, eager kernels in the same process get slower (paddle 3.3.1).
    for case in args.case or DEFAULT_CASES:
        subprocess.run([sys.executable, os.path.abspath(__file__), '--child', '--case', case,
                        '--paths', ','.join(args.paths), '--threads', str(args.threads),
                        '--warmup', str(args.warmup), '--batch_size', str(args.batch_size)],
                       check=True)


if __name__ == '__main__':
    main()
