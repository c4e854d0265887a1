"""Where a training step's time goes, per op kind, against its FLOPs and this CPU's GEMM rate.

    python benchmarks/profile_step.py [--cases quickstart,r50] [--threads 1,2]

Cases (each in its own process, one warm-up step, then one step under ``paddle.profiler``):

* ``quickstart``: one iteration of ``configs/quickstart.yml`` on its first training batch
  (the quick-start data is generated on first use);
* ``r50``: one ``solov2_r50_fpn_1x`` step at batch 2, 512x512 (``bench_model.train_batch``).

Each table row is an op kind: its forward and backward time, its FLOPs (convolutions and the
dynamic-kernel product, counted from the shapes; the other kinds are memory-bound), the rate it
reached and that rate as a share of ``paddle.matmul``'s 2048x2048 float32 rate at the same
thread count, measured in the same process. "Python and framework" is the step's wall time
outside any operator. The GEMM table gives ``paddle.matmul`` and numpy (OpenBLAS) at 1 and 2
threads. ``MKL_DEBUG_CPU_TYPE`` set in the environment is kept (ppdet's choice otherwise).
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GEMM_SIDE = 2048

# op kind -> forward op names (paddle's dygraph op types); backward nodes map back by name
KINDS = [
    ('convolution', ('conv2d', 'depthwise_conv2d')),
    ('GroupNorm', ('group_norm',)),
    ('BatchNorm', ('batch_norm',)),
    ('interpolate', ('bilinear_interp', 'nearest_interp', 'tile', '_bilinear2x')),
    ('dynamic-kernel product (gather + bmm)', ('bmm', 'gather')),
]
LOSS = 'losses (dice, focal)'
OTHER = 'other elementwise and layout ops'
OPTIMIZER = 'optimizer'
PYTHON = 'Python and framework between ops'


# --------------------------------------------------------------------------- GEMM rate

def paddle_gemm_rate(repeats=3):
    import paddle
    a = paddle.randn([GEMM_SIDE, GEMM_SIDE])
    b = paddle.randn([GEMM_SIDE, GEMM_SIDE])
    paddle.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        paddle.matmul(a, b).numpy()
    return 2 * GEMM_SIDE ** 3 * repeats / (time.perf_counter() - start) / 1e9


def numpy_gemm_rate(repeats=3):
    a = np.random.RandomState(0).standard_normal((GEMM_SIDE, GEMM_SIDE)).astype(np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * GEMM_SIDE ** 3 * repeats / (time.perf_counter() - start) / 1e9


# --------------------------------------------------------------------------- cases

def _optimizer(cfg, model):
    """The config's optimizer at a constant learning rate."""
    from ppdet.core.workspace import create
    return create('OptimizerBuilder', cfg)(0.001, model)


def quickstart_case():
    from ppdet.core.workspace import create, load_config
    from ppdet.data import build_dataset, build_loader
    os.chdir(ROOT)
    cfg = load_config(os.path.join('configs', 'quickstart.yml'))
    loader = build_loader(cfg, 'train', build_dataset(cfg, 'train'), num_workers=0)
    loader.set_epoch(0)
    batch = next(iter(loader))
    return cfg, create(cfg.architecture, cfg), batch


def r50_case():
    import bench_model
    from ppdet.core.workspace import load_config
    return load_config(bench_model.CONFIG), bench_model.build_model(), bench_model.train_batch()


CASES = {'quickstart': quickstart_case, 'r50': r50_case}


class _Flops:
    """Forward multiply-adds of the convolutions and the dynamic-kernel product, and what their
    backward passes cost (input and weight gradients, where needed)."""

    def __init__(self, model):
        import paddle
        self.forward = {'convolution': 0., 'dynamic-kernel product (gather + bmm)': 0.}
        self.backward = dict.fromkeys(self.forward, 0.)
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.Conv2D):
                layer.register_forward_post_hook(self._conv)
        self._bmm = paddle.bmm

        def counted_bmm(x, y, name=None):
            macs = x.shape[0] * x.shape[1] * x.shape[2] * y.shape[2]
            key = 'dynamic-kernel product (gather + bmm)'
            self.forward[key] += 2 * macs
            self.backward[key] += 2 * macs * ((not x.stop_gradient) + (not y.stop_gradient))
            return self._bmm(x, y)
        paddle.bmm = counted_bmm

    def _conv(self, layer, inputs, output):
        x = inputs[0]
        weight = layer.weight
        macs = float(np.prod(output.shape)) * float(np.prod(weight.shape[1:]))
        self.forward['convolution'] += 2 * macs
        self.backward['convolution'] += 2 * macs * ((not x.stop_gradient) +
                                                    (not weight.stop_gradient))

    def reset(self):
        for table in (self.forward, self.backward):
            for key in table:
                table[key] = 0.


class _LossLayer:
    """Wraps the head's loss so that its forward ops fall in a profiler range of their own."""

    def __init__(self, loss):
        import paddle
        self.loss, self.record = loss, paddle.profiler.RecordEvent

    def __call__(self, *args):
        with self.record('SOLOv2Loss'):
            return self.loss(*args)


def _snake(name):
    return re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()


def _op_type(event_name):
    """``conv2d dygraph[1.2 ms]`` -> ``('conv2d', False)``,
    ``Global_Conv2dGradNodeFinal[..]`` -> ``('conv2d', True)``."""
    name = event_name.split('[')[0]
    if name.endswith(' dygraph'):
        return name[:-len(' dygraph')], False
    match = re.match(r'Global_GradNodePyLayer_(\w+)$', name)   # a hand-written backward
    if match:
        return match.group(1).lower(), True
    match = re.match(r'Global_(\w+?)GradNode(Final)?$', name)
    if match:
        return _snake(match.group(1)), True
    return name, False


def _union(intervals):
    total, end = 0., -np.inf
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def profile_step(case, threads):
    """-> dict with the step's wall time, per-kind forward/backward ms and FLOPs."""
    import paddle
    import paddle.profiler as profiler
    from ppdet.engine.env import set_cpu_threads
    threads = set_cpu_threads(threads)
    cfg, model, batch = CASES[case]()
    model.train()
    head = model.solov2_head
    head.loss = _LossLayer(head.loss)
    optimizer = _optimizer(cfg, model)
    flops = _Flops(model)

    def step():
        loss = model(batch)['loss']
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    step()
    flops.reset()
    start, cpu = time.perf_counter(), time.process_time()
    step()
    plain_wall, plain_cpu = time.perf_counter() - start, time.process_time() - cpu
    forward_flops, backward_flops = dict(flops.forward), dict(flops.backward)
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=lambda p: None)   # exported below, not to ./
    prof.start()
    start = time.perf_counter()
    step()
    wall = time.perf_counter() - start
    prof.step()
    prof.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'trace.json')
        prof.export(path, format='json')
        with open(path) as f:
            events = json.load(f)['traceEvents']
    result = _classify(events)
    result.update(case=case, threads=threads, wall=wall, plain_wall=plain_wall,
                  plain_cpu=plain_cpu,
                  gemm=paddle_gemm_rate(), forward_flops=forward_flops,
                  backward_flops=backward_flops)
    return result


def _classify(events):
    ops = [e for e in events if e.get('cat') == 'Operator' and e.get('ph') == 'X']
    loss_ranges = [(e['ts'], e['ts'] + e['dur']) for e in events
                   if e.get('name', '').startswith('SOLOv2Loss')]
    optimizer_ranges = [(e['ts'], e['ts'] + e['dur']) for e in events
                        if e.get('cat') == 'Optimization']

    def inside(event, ranges):
        return any(a <= event['ts'] <= b for a, b in ranges)

    # only the outermost operator events count (grad nodes can run ops inside them)
    ops.sort(key=lambda e: (e['ts'], -e['dur']))
    outer, end = [], -np.inf
    for event in ops:
        if event['ts'] >= end:
            outer.append(event)
            end = event['ts'] + event['dur']
    loss_types = {_op_type(e['name'])[0] for e in outer
                  if not _op_type(e['name'])[1] and inside(e, loss_ranges)}
    other_types = {_op_type(e['name'])[0] for e in outer
                   if not _op_type(e['name'])[1] and not inside(e, loss_ranges)}
    kind_of = {name: kind for kind, names in KINDS for name in names}
    table, others = {}, {}
    for event in outer:
        op, backward = _op_type(event['name'])
        if inside(event, optimizer_ranges):
            kind = OPTIMIZER
        elif op in kind_of:
            kind = kind_of[op]
        elif (inside(event, loss_ranges) if not backward else
              op in loss_types and op not in other_types):
            kind = LOSS
        else:
            kind = OTHER
        row = table.setdefault(kind, [0., 0.])
        row[backward] += event['dur'] / 1e3
        if kind == OTHER:
            key = op + (' (backward)' if backward else '')
            others[key] = others.get(key, 0.) + event['dur'] / 1e3
    step_events = [e for e in events if e.get('cat') == 'ProfileStep']
    return {'kinds': table, 'others': others, 'op_ms': _union((e['ts'], e['ts'] + e['dur']) for e in outer) / 1e3,
            'profiled_ms': max(e['dur'] for e in step_events) / 1e3 if step_events else None}


# --------------------------------------------------------------------------- output

def print_case(r):
    gemm = r['gemm']
    wall_ms = r['wall'] * 1e3
    python_ms = max(wall_ms - r['op_ms'], 0.)
    print(f'\n### {r["case"]}: one training step, {r["threads"]} thread(s): '
          f'{r["plain_wall"]:.3f} s unprofiled ({r["plain_cpu"]:.3f} s CPU), '
          f'{r["wall"]:.3f} s profiled; '
          f'paddle.matmul here: {gemm:.0f} GFLOP/s\n')
    print('| op kind | forward ms | backward ms | share of step | GFLOP | GFLOP/s | '
          'share of matmul rate |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    order = [k for k, _ in KINDS] + [LOSS, OTHER, OPTIMIZER]
    total_flops = 0.
    for kind in order:
        fwd, bwd = r['kinds'].get(kind, [0., 0.])
        flops = r['forward_flops'].get(kind, 0.) + r['backward_flops'].get(kind, 0.)
        total_flops += flops
        rate = flops / ((fwd + bwd) / 1e3) / 1e9 if flops and fwd + bwd else None
        print(f'| {kind} | {fwd:.0f} | {bwd:.0f} | {(fwd + bwd) / wall_ms:.1%} | '
              + (f'{flops / 1e9:.1f} | {rate:.0f} | {rate / gemm:.0%} |' if rate else '| | |'))
    print(f'| {PYTHON} | | | {python_ms / wall_ms:.1%} | | | |')
    rate = total_flops / r['wall'] / 1e9
    print(f'| whole step | | | 100% | {total_flops / 1e9:.1f} | {rate:.0f} | {rate / gemm:.0%} |')
    top = sorted(r['others'].items(), key=lambda kv: -kv[1])[:6]
    print(f'\n{OTHER}, largest: ' + ', '.join(f'{k} {v:.0f} ms' for k, v in top))
    conv = 'convolution'
    fwd = r['forward_flops'][conv] / (r['kinds'][conv][0] / 1e3) / 1e9
    bwd = r['backward_flops'][conv] / (r['kinds'][conv][1] / 1e3) / 1e9
    print(f'\nconvolutions: forward {fwd:.0f} GFLOP/s ({fwd / gemm:.0%} of matmul), backward '
          f'{bwd:.0f} GFLOP/s ({bwd / gemm:.0%})')


def gemm_table(thread_counts):
    print('| GEMM 2048x2048 float32 | ' + ' | '.join(f'{t} thread(s) GFLOP/s'
                                                    for t in thread_counts) + ' |')
    print('| --- |' + ' ---: |' * len(thread_counts))
    rows = {'paddle.matmul (MKL)': [], 'numpy (OpenBLAS)': []}
    for threads in thread_counts:
        rows['paddle.matmul (MKL)'].append(_run_json(['--gemm', 'paddle', '--threads',
                                                      str(threads)]))
        rows['numpy (OpenBLAS)'].append(_run_json(['--gemm', 'numpy', '--threads',
                                                   str(threads)], numpy_threads=threads))
    for name, values in rows.items():
        print(f'| {name} | ' + ' | '.join(f'{v:.0f}' for v in values) + ' |')


def _run_json(args, numpy_threads=None):
    env = dict(os.environ)
    if numpy_threads is not None:
        env['OPENBLAS_NUM_THREADS'] = str(numpy_threads)
        # a current OpenBLAS picks its own kernel; the pinned core type slows it down
        env.pop('OPENBLAS_CORETYPE', None)
        env.pop('OPENBLAS_L2_SIZE', None)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        sys.exit(f'{args} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', default='quickstart,r50')
    parser.add_argument('--threads', default='1,2', help='thread counts of the GEMM table; '
                        'the cases run at the first')
    parser.add_argument('--case', help=argparse.SUPPRESS)
    parser.add_argument('--gemm', help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(',')]
    if args.gemm:
        if args.gemm == 'numpy':
            print(json.dumps(numpy_gemm_rate()))
        else:
            from ppdet.engine.env import set_cpu_threads
            set_cpu_threads(threads[0])
            print(json.dumps(paddle_gemm_rate()))
        return
    if args.case:
        print(json.dumps(profile_step(args.case, threads[0])))
        return
    mkl = os.environ.get('MKL_DEBUG_CPU_TYPE')
    from ppdet.utils.cpuinfo import describe_cpu
    mkl = repr(mkl) if mkl is not None else f'{os.environ.get("MKL_DEBUG_CPU_TYPE")} (ppdet)'
    print(f'{describe_cpu()}; MKL_DEBUG_CPU_TYPE={mkl}'
          f', ONEDNN_MAX_CPU_ISA={os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset)")}; '
          f'{datetime.date.today()}; load average {os.getloadavg()[0]:.2f}\n')
    gemm_table(threads)
    for case in args.cases.split(','):
        print_case(_run_json(['--case', case, '--threads', str(threads[0])]))


if __name__ == '__main__':
    main()
