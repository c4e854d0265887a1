"""The quick start from a clean state: wall time, CPU time and mask AP, per kernel choice.

    python benchmarks/bench_quickstart.py [--kernels toolkit,avx2] [--seeds 0] [--zen2-factor F]

Each run copies the repository's tracked files into a temporary folder (so no generated data
or earlier output is reused) and runs ``python tools/quickstart.py`` there, as the README's
first command does, in this Python environment. ``--kernels``: ``toolkit`` (the MKL kernels
ppdet selects for this CPU), ``avx2`` (AVX2 kernels with oneDNN capped at AVX2: an AVX2-only
CPU emulated on this one), ``mkl-own`` (MKL's own choice, as the reference runs).

The last column estimates the wall time on the 2-core AMD EPYC Zen 2 of PERF.md: this run's
wall time times ``--zen2-factor``, the ratio of that machine's reference training step
(72.0 s) to the same step here, which ``benchmarks/bench_model.py --cases train`` prints as
its reference-equivalent row; it is meaningful for the ``avx2`` rows (the Zen 2 runs AVX2
kernels). The default is the factor measured on 2026-12-02.
"""
import argparse
import datetime
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

KERNELS = {'toolkit': {}, 'avx2': {'MKL_DEBUG_CPU_TYPE': '5', 'ONEDNN_MAX_CPU_ISA': 'AVX2'},
           'mkl-own': {'MKL_DEBUG_CPU_TYPE': ''}}
ZEN2_FACTOR = 1.99       # 72.0 s / 36.2 s, bench_model.py --cases train, 2026-12-02


def clean_copy(target):
    """The repository's tracked files (the working tree's versions) under ``target``."""
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split('\0')
    for name in filter(None, files):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name))


def run_quickstart(kernels, seed):
    with tempfile.TemporaryDirectory(prefix='quickstart-bench-') as tmp:
        clean_copy(tmp)
        env = {k: v for k, v in os.environ.items()
               if k not in ('MKL_DEBUG_CPU_TYPE', 'ONEDNN_MAX_CPU_ISA')}
        env.update(KERNELS[kernels])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, 'tools/quickstart.py', '-o', f'seed={seed}'],
                              cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f'quick start ({kernels}, seed {seed}) failed:\n{proc.stderr[-3000:]}')
    ap = float(re.search(r'mask AP@\[\.5:\.95\][^:]*: ([0-9.]+)', proc.stdout).group(1))
    training = float(re.search(r'\(training (\d+) s\)', proc.stdout).group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {'wall': wall, 'cpu': cpu, 'training': training, 'ap': ap}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kernels', default='toolkit,avx2')
    parser.add_argument('--seeds', default='0', help='training seeds, comma-separated')
    parser.add_argument('--zen2-factor', type=float, default=ZEN2_FACTOR)
    args = parser.parse_args()
    from ppdet.engine.env import cpu_threads
    from ppdet.utils.cpuinfo import describe_cpu
    load = os.getloadavg()[0]
    rows = [(k, s, run_quickstart(k, s)) for k in args.kernels.split(',')
            for s in map(int, args.seeds.split(','))]
    print(f'{describe_cpu(cpu_threads())}; {datetime.date.today()}; load average before '
          f'{load:.2f}, after {os.getloadavg()[0]:.2f}\n')
    print('| kernels | seed | wall s | of it training s | CPU s (all processes) | mask AP | '
          f'Zen 2 estimate (wall x {args.zen2_factor:.2f}) |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for kernels, seed, r in rows:
        estimate = f'{r["wall"] * args.zen2_factor:.0f} s' if kernels == 'avx2' else ''
        print(f'| {kernels} | {seed} | {r["wall"]:.0f} | {r["training"]:.0f} | {r["cpu"]:.0f} | '
              f'{r["ap"]:.3f} | {estimate} |')


if __name__ == '__main__':
    main()
