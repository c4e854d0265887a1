"""Per-image CPU latency of every inference path, and the eval forward against the reference.

    python benchmarks/bench_infer.py                 # the latency table (resumable)
    python benchmarks/bench_infer.py --ratio         # eval forward vs the reference-equivalent
    MKL_DEBUG_CPU_TYPE=5 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_infer.py   # emulated AVX2

**Latency table.** A case is ``config:HxW:repeats`` (config: a name under configs/ or
configs/solov2/); the image is HxW and the test Resize targets HxW, so the network sees that
size. Paths: ``eager`` (dygraph ``model.predict``), ``paddle`` (the exported program in Paddle
Inference, oneDNN, float32), ``paddle-bf16`` (same, bfloat16 convolutions; CPUs with AVX-512
BF16 or AMX), ``onnx`` (onnxruntime, float32), ``onnx-int8`` (onnxruntime on the model of
tools/quantize.py, calibrated on 4 synthetic images: a latency figure, not an accuracy one;
see bench_precision.py for that). Every path runs the same number of threads; each (case,
threads) runs in its own process, eager first (after a Paddle Inference predictor with oneDNN
has run, eager kernels in the same process get slower). Per image: median wall and process
CPU time of ``repeats`` runs after ``--warmup``, from the decoded image to per-image results.
*inference ms*: mean time of the network + Matrix NMS + mask pasting alone. *G mult-adds* is
tools/model_stats.py's count for the network (post-processing not counted); *GFLOP/s* counts
two operations per multiply-add over the inference time.

Rows are appended to ``--results`` (JSON lines) as they are measured, and a rerun skips the
rows already there for this CPU: an interrupted run resumes where it stopped. ``--table``
prints the file's table only.

**Eval forward ratio** (``--ratio``): ``solov2_r50_fpn_1x`` at 512x512 and 800x1216, batch 1,
the parity fixture's photo, seeded weights: this toolkit through its fastest exact engine
(``inference_engine: auto``, or ``--engine``; the program built beforehand in another process,
as a second evaluation finds it) against the reference-equivalent eager forward: the same
network with a reference-style post-processing (bench_model.py) run on MKL's own kernel choice
(``MKL_DEBUG_CPU_TYPE`` empty, what a user of the reference gets on an AMD CPU), at equal
threads. Each side in its own process; peak RSS is that process's.

Weights: the parity fixtures' seeded weights where ``../shared`` exists (else paddle's random
init), with the category bias raised so that post-processing has detections to work on.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the deploy predictor's ``infer`` before the scripts of the same name (./infer.py, tools/)
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(ROOT, 'deploy', 'python'),
                ROOT]
sys.path.append(os.path.join(ROOT, 'tools'))     # model_stats, quantize

import ppdet  # noqa: E402,F401  (MKL kernel choice before paddle's first call)
import paddle  # noqa: E402

from infer import Detector, split_batch  # noqa: E402
from preprocess import Preprocessor, collate  # noqa: E402
from ppdet.core.config import load_config  # noqa: E402
from ppdet.core.workspace import create  # noqa: E402
from ppdet.engine.env import cpu_threads  # noqa: E402
from ppdet.engine.export import export_model  # noqa: E402
from ppdet.utils.cpuinfo import describe_cpu  # noqa: E402

SEED_CONFIGS = ('solov2_r50_fpn_1x_coco', 'solov2_r50_fpn_3x_coco', 'solov2_r50_enhance_coco',
                'solov2_r101_vd_fpn_3x_coco')
DEFAULT_CASES = ['quickstart:192x192:20'] + [f'{name}:512x512:3' for name in SEED_CONFIGS]
PATHS = ('eager', 'paddle', 'paddle-bf16', 'onnx', 'onnx-int8')
RATIO_SIZES = ((512, 512), (800, 1216))
PARITY = os.path.join(ROOT, '..', 'shared', 'reference', 'parity')
CATEGORY_BIAS = -3.5
DEFAULT_RESULTS = os.path.join(ROOT, 'output', 'benchmarks', 'bench_infer.jsonl')


# --------------------------------------------------------------------------- set-up

def config_path(name):
    for folder in ('configs', os.path.join('configs', 'solov2')):
        path = os.path.join(ROOT, folder, name + '.yml')
        if os.path.isfile(path):
            return path
    raise SystemExit(f'error: no config {name}.yml under configs/ or configs/solov2/')


def build(name, hw=None):
    """(config with the test Resize at ``hw``, seeded eval-mode model)."""
    cfg = load_config(config_path(name))
    if hw:
        for op in cfg['TestReader']['sample_transforms']:
            if 'Resize' in op:
                op['Resize'] = dict(op['Resize'], target_size=list(hw), keep_ratio=True)
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


def isa_note():
    """How the kernels were limited, for the CPU column."""
    isa = os.environ.get('ONEDNN_MAX_CPU_ISA')
    if not isa:
        return ''
    return (f'; emulated {isa}: MKL_DEBUG_CPU_TYPE={os.environ.get("MKL_DEBUG_CPU_TYPE", "")} '
            f'ONEDNN_MAX_CPU_ISA={isa} (onnxruntime picks its kernels by cpuid: not limited)')


def bfloat16_available():
    isa = os.environ.get('ONEDNN_MAX_CPU_ISA', '').upper()
    limited = isa.startswith(('SSE', 'AVX2', 'AVX_')) or isa in ('AVX', 'AVX512_CORE')
    return paddle.base.core.supports_bfloat16() and not limited


def flops(model, hw):
    """(multiply-adds of the network, names of the layer types the count leaves out)."""
    from model_stats import count_flops, padded_size
    count = count_flops(model, padded_size(*hw))
    return count.total, sorted(count.uncounted)


def timed(fn, repeats):
    """Median (wall, CPU) seconds of ``fn()``."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


class EagerDetector:
    """The dygraph model behind the deploy predictor's interface (same stages)."""

    def __init__(self, model, preprocess):
        self.model, self.preprocess = model, preprocess
        self.inference = 0.

    def predict(self, images):
        samples = [self.preprocess(image) for image in images]
        feeds = {k: paddle.to_tensor(v) for k, v in collate(samples).items()}
        start = time.perf_counter()
        with paddle.no_grad():
            out = self.model.predict(feeds['image'], feeds['im_shape'], feeds['scale_factor'])
        self.inference += time.perf_counter() - start
        return split_batch({k: v.numpy() for k, v in out.items()},
                           [info['orig_hw'] for _, info in samples])


def inference_seconds(detector):
    if isinstance(detector, EagerDetector):
        return detector.inference
    return detector.timer.seconds['inference']


def reset(detector):
    if isinstance(detector, EagerDetector):
        detector.inference = 0.
    else:
        detector.timer.reset()


# --------------------------------------------------------------------------- latency table

def row_key(row):
    return (row['cpu'], row['model'], row['input'], row['path'], row['threads'], row['batch'])


def read_rows(path):
    if not os.path.isfile(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def planned(case, args, threads):
    name, size, repeats = case.split(':')
    return [dict(cpu=describe_cpu() + isa_note(), model=name, input=size, path=path,
                 threads=threads, batch=batch, repeats=int(repeats))
            for path in args.paths for batch in args.batch
            if path != 'paddle-bf16' or bfloat16_available()]


def make_detector(path, model, export_dir, threads):
    if path == 'eager':
        return EagerDetector(model, Preprocessor(infer_config_of(export_dir)['Preprocess']))
    if path == 'onnx-int8':
        return Detector(export_dir + '_int8', 'onnx', cpu_threads=threads)
    return Detector(export_dir, 'onnx' if path == 'onnx' else 'paddle', cpu_threads=threads,
                    enable_mkldnn_bfloat16=path == 'paddle-bf16')


def infer_config_of(export_dir):
    import yaml
    with open(os.path.join(export_dir, 'infer_cfg.yml')) as f:
        return yaml.safe_load(f)


def run_case(case, args, threads, workdir):
    """Measure the rows of one (case, threads) not yet in the results file."""
    done = {row_key(r) for r in read_rows(args.results)}
    todo = [r for r in planned(case, args, threads) if row_key(r) not in done]
    if not todo:
        return
    hw = tuple(int(v) for v in todo[0]['input'].lower().split('x'))
    cfg, model = build(todo[0]['model'], hw)
    paddle.base.core.set_num_threads(threads)
    export_dir = os.path.join(workdir, 'export')
    paths = {r['path'] for r in todo}
    export_model(model, cfg, export_dir, onnx=bool(paths & {'onnx', 'onnx-int8'}))
    rng = np.random.RandomState(0)
    images = [(rng.rand(*hw, 3) * 255).astype(np.uint8) for _ in range(max(args.batch))]
    if 'onnx-int8' in paths:
        from quantize import quantize
        quantize(export_dir, images[:1] * 4, export_dir + '_int8')
    macs, uncounted = flops(model, hw)
    for path in dict.fromkeys(r['path'] for r in todo):
        detector = make_detector(path, model, export_dir, threads)
        for row in (r for r in todo if r['path'] == path):
            batch = images[:row['batch']]
            for _ in range(args.warmup):
                detector.predict(batch)
            reset(detector)
            wall, cpu = timed(lambda: detector.predict(batch), row['repeats'])
            infer_s = inference_seconds(detector) / row['repeats'] / row['batch']
            row.update(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                       load=os.getloadavg()[0], ms=1000 * wall / row['batch'],
                       cpu_ms=1000 * cpu / row['batch'], inference_ms=1000 * infer_s,
                       gmacs=macs / 1e9, gflops=2 * macs / infer_s / 1e9, uncounted=uncounted)
            with open(args.results, 'a', encoding='utf-8') as f:
                f.write(json.dumps(row) + '\n')
            print(format_row(row), flush=True)
        del detector


TABLE_HEADER = ('| model | input | path | threads | batch | ms/image | CPU ms/image | '
                'inference ms | G mult-adds | GFLOP/s | vs eager | vs eager (CPU) | load | CPU |\n'
                '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')


def format_row(row, eager=None):
    ratio = (f'{eager["ms"] / row["ms"]:.2f}x | {eager["cpu_ms"] / row["cpu_ms"]:.2f}x' if eager
             else ' | ')
    return (f'| {row["model"]} | {row["input"]} | {row["path"]} | {row["threads"]} | '
            f'{row["batch"]} | {row["ms"]:.1f} | {row["cpu_ms"]:.1f} | '
            f'{row["inference_ms"]:.1f} | {row["gmacs"]:.1f}{"*" * bool(row["uncounted"])} | '
            f'{row["gflops"]:.0f} | {ratio} | '
            f'{row["load"]:.1f} | {row["cpu"]} |')


def print_table(rows):
    print(TABLE_HEADER)
    eager = {row_key({**r, 'path': 'eager'}): r for r in rows if r['path'] == 'eager'}
    for row in rows:
        print(format_row(row, eager.get(row_key({**row, 'path': 'eager'}))))


# --------------------------------------------------------------------------- eval forward ratio

def photo_inputs(hw):
    from bench_model import photo
    return (paddle.to_tensor(photo(*hw)), paddle.to_tensor([list(hw)], 'float32'),
            paddle.ones([1, 2]))


def ratio_side(side, hw, threads, repeats, cache_dir, engine):
    """One side of the ratio, in this process: ``build`` (the toolkit's program, untimed),
    ``toolkit`` or ``reference``. Prints one JSON line."""
    from ppdet.engine.runtime import build_runtime
    paddle.base.core.set_num_threads(threads)
    cfg, model = build('solov2_r50_fpn_1x_coco')
    model.solov2_head.solo_cate.bias.set_value(
        paddle.full(model.solov2_head.solo_cate.bias.shape, -5.3))     # the fixture's bias
    inputs = photo_inputs(hw)
    if side == 'reference':
        from bench_model import reference_style_prediction

        def forward():
            with paddle.no_grad():
                return reference_style_prediction(model.solov2_head, *model.extract(inputs[0]),
                                                  *inputs[1:])
        engine = 'eager, reference-style post-processing'
    else:
        runtime = build_runtime(model, cfg, engine=engine, threads=threads, cache_dir=cache_dir)
        forward, engine = (lambda: runtime(*inputs)), getattr(runtime, 'engine', 'eager')
        if side == 'build':
            forward()
            return
    forward()
    wall, cpu = timed(forward, repeats)
    print(json.dumps({'side': side, 'engine': engine, 'wall': wall, 'cpu': cpu,
                      'rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def run_ratio(args):
    print(f'# eval forward, solov2_r50_fpn_1x_coco, batch 1, {describe_cpu()}{isa_note()}, '
          f'paddle {paddle.__version__}, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}')
    print('| input | threads | toolkit engine | toolkit s (CPU s) | peak RSS GB | reference-'
          'equivalent s (CPU s) | peak RSS GB | ratio (wall) | ratio (CPU) | load |\n'
          '|---|---|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory(dir=scratch_dir()) as cache:
        for hw in args.sizes:
            for threads in args.threads:
                threads = threads or cpu_threads()
                sides = {}
                for side in ('build', 'toolkit', 'reference'):
                    env = dict(os.environ)
                    if side == 'reference':
                        env['MKL_DEBUG_CPU_TYPE'] = ''
                    proc = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), '--ratio_side', side,
                         '--ratio_size', f'{hw[0]}x{hw[1]}', '--threads', str(threads),
                         '--repeats', str(args.repeats), '--cache', cache,
                         '--engine', args.engine],
                        env=env, capture_output=True, text=True)
                    if proc.returncode:
                        sys.exit(f'{side} {hw} failed:\n{proc.stderr[-3000:]}')
                    if side != 'build':
                        sides[side] = json.loads(proc.stdout.strip().splitlines()[-1])
                ours, ref = sides['toolkit'], sides['reference']
                print(f'| {hw[0]}x{hw[1]} | {threads} | {ours["engine"]} | {ours["wall"]:.2f} '
                      f'({ours["cpu"]:.2f}) | {ours["rss_gb"]:.2f} | {ref["wall"]:.2f} '
                      f'({ref["cpu"]:.2f}) | {ref["rss_gb"]:.2f} | '
                      f'{ours["wall"] / ref["wall"]:.2f}x | {ours["cpu"] / ref["cpu"]:.2f}x | '
                      f'{os.getloadavg()[0]:.1f} |', flush=True)


# --------------------------------------------------------------------------- command line

def scratch_dir():
    folder = os.path.join(ROOT, '.scratch')
    return folder if os.path.isdir(folder) else None


def int_list(text):
    return [int(v) for v in text.split(',')]


def size_list(text):
    return [tuple(int(v) for v in size.split('x')) for size in text.split(',')]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--case', action='append', help='config:HxW:repeats (repeatable)')
    parser.add_argument('--paths', default=','.join(PATHS),
                        help='comma list of ' + ', '.join(PATHS))
    parser.add_argument('--threads', type=int_list, default=[1, 0],
                        help='comma list of thread counts; 0: every usable core')
    parser.add_argument('--batch', type=int_list, default=[1, 4], help='comma list of batch sizes')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3, help='--ratio: timed runs per side')
    parser.add_argument('--results', default=DEFAULT_RESULTS, help='JSON lines, appended')
    parser.add_argument('--table', action='store_true', help='print the results file and stop')
    parser.add_argument('--ratio', action='store_true', help='the eval forward ratio instead')
    parser.add_argument('--engine', default='auto', help='--ratio: the toolkit\'s inference_engine')
    parser.add_argument('--sizes', type=size_list, default=list(RATIO_SIZES),
                        help='--ratio: comma list of HxW')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--ratio_side', help=argparse.SUPPRESS)
    parser.add_argument('--ratio_size', help=argparse.SUPPRESS)
    parser.add_argument('--cache', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.paths = args.paths.split(',')
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f'unknown paths {", ".join(sorted(unknown))}')
    if args.ratio_side:
        hw = tuple(int(v) for v in args.ratio_size.split('x'))
        return ratio_side(args.ratio_side, hw, args.threads[0], args.repeats, args.cache,
                          args.engine)
    if args.ratio:
        return run_ratio(args)
    if args.child:
        with tempfile.TemporaryDirectory(dir=scratch_dir()) as workdir:
            run_case(args.child, args, args.threads[0], workdir)
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    cases = args.case or DEFAULT_CASES
    if not args.table:
        print(f'# {describe_cpu()}{isa_note()}, paddle {paddle.__version__}, rows appended to '
              f'{args.results}', flush=True)
        for case in cases:
            for threads in args.threads:
                threads = threads or cpu_threads()
                done = {row_key(r) for r in read_rows(args.results)}
                if all(row_key(r) in done for r in planned(case, args, threads)):
                    continue
                subprocess.run([sys.executable, os.path.abspath(__file__), '--child', case,
                                '--paths', ','.join(args.paths), '--threads', str(threads),
                                '--batch', ','.join(map(str, args.batch)),
                                '--warmup', str(args.warmup), '--results', args.results],
                               check=True)
    wanted = {row_key(r) for case in cases for t in args.threads
              for r in planned(case, args, t or cpu_threads())}
    rows = [r for r in read_rows(args.results) if row_key(r) in wanted]
    print_table(rows)
    if not bfloat16_available():
        print('paddle-bf16: not measured, this CPU has no bfloat16 support')
    left_out = sorted({name for r in rows for name in r['uncounted']})
    if left_out:
        print(f'*: without the layers the FLOPs counters do not cover ({", ".join(left_out)})')


if __name__ == '__main__':
    main()
