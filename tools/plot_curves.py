"""Plot a run's training curves from its metrics.jsonl and summarise the run.

    python tools/plot_curves.py output/quickstart --keys loss,loss_ins,loss_cate,lr,segm_AP

Writes one subplot per key against the iteration (the global ``step``) to
``RUN_DIR/curves.png`` (or ``--output``) and prints: the best ``segm_AP`` and its epoch, the
mean time per iteration (``batch_time`` and ``data_time`` of the logged iterations), and, where
rows carry ``eta`` (seconds left) and ``time`` (Unix time of the row), how far the ETA logged
at 10 %, 50 % and 90 % of the run was from the real end (the last row). Needs matplotlib
(in requirements.txt).
"""
import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from ppdet.core.errors import ConfigError, DataError  # noqa: E402
from ppdet.core.workspace import closest  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402

__all__ = ['Metrics', 'read_metrics', 'plot_curves', 'summarize']

DEFAULT_KEYS = ['loss', 'loss_ins', 'loss_cate', 'lr', 'segm_AP']
METRICS_FILE = 'metrics.jsonl'
_NOT_CURVES = {'type', 'epoch', 'iter', 'step', 'time', 'eta'}


@dataclasses.dataclass
class Metrics:
    """The rows of one metrics.jsonl, split by ``type``."""
    path: str
    train: list
    eval: list

    def keys(self):
        return {k for row in self.train + self.eval for k in row} - _NOT_CURVES

    def series(self, key):
        """(steps, values) of every row that has ``key``, in file order."""
        rows = [r for r in self.train + self.eval if key in r and r[key] is not None]
        rows.sort(key=lambda r: r['step'])
        return (np.array([r['step'] for r in rows], float),
                np.array([r[key] for r in rows], float))


def read_metrics(run_dir):
    """Parse ``RUN_DIR/metrics.jsonl``; an unfinished last line (a run still writing) is
    left out, any other unreadable line is a :class:`DataError` naming it."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise DataError(f'{path}: not found (RUN_DIR must be a training output folder, '
                        f'<save_dir>/<config name>)')
    with open(path, encoding='utf-8') as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    rows = []
    for k, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break
            raise DataError(f'{path}:{n}: not a JSON object') from None
        if not isinstance(row, dict) or 'step' not in row:
            raise DataError(f'{path}:{n}: a metrics row needs a `step`')
        rows.append(row)
    if not rows:
        raise DataError(f'{path}: no metrics rows yet')
    return Metrics(path, [r for r in rows if r.get('type', 'train') == 'train'],
                   [r for r in rows if r.get('type') == 'eval'])


def choose_keys(metrics, requested):
    """The keys to plot; ``requested=None`` takes the default keys the run has."""
    available = metrics.keys()
    if requested is None:
        return [k for k in DEFAULT_KEYS if k in available]
    for key in requested:
        if key not in available:
            raise ConfigError(f'{metrics.path}: no key `{key}`{closest(key, available)}; it has '
                              f'{", ".join(sorted(available))}')
    return requested


def plot_curves(metrics, keys, output):
    """One subplot per key against the step, written to ``output`` (PNG)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError('plot_curves needs matplotlib: pip install matplotlib') from None
    fig, axes = plt.subplots(len(keys), 1, sharex=True, squeeze=False,
                             figsize=(7, 1.8 * len(keys) + 0.6))
    eval_keys = {k for row in metrics.eval for k in row}
    for ax, key in zip(axes[:, 0], keys):
        steps, values = metrics.series(key)
        ax.plot(steps, values, 'o-' if key in eval_keys else '-', linewidth=1.2, markersize=4)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel('iteration')
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics.path))))
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    plt.close(fig)


def _eta_lines(train):
    timed = [r for r in train if 'eta' in r and 'time' in r]
    if len(timed) < 2:
        return ['ETA accuracy: not available (rows without `eta` and `time`)']
    start, end = timed[0]['time'], timed[-1]['time']
    lines = []
    for fraction in (0.1, 0.5, 0.9):
        row = next(r for r in timed if r['time'] - start >= fraction * (end - start))
        real = end - row['time']
        error = row['eta'] - real
        lines.append(f'ETA at {fraction:.0%} of the run (step {row["step"]}): '
                     f'{row["eta"]:.0f} s left, really {real:.0f} s '
                     f'({error:+.0f} s, {error / max(real, 1e-9):+.0%})')
    return lines


def summarize(metrics):
    """Lines of text: best AP and its epoch, time per iteration, ETA accuracy."""
    lines = []
    evals = [r for r in metrics.eval if r.get('segm_AP') is not None]
    if evals:
        best = max(evals, key=lambda r: r['segm_AP'])
        lines.append(f'best segm_AP {best["segm_AP"]:.4f} at epoch {best.get("epoch")} '
                     f'(step {best["step"]}), last {evals[-1]["segm_AP"]:.4f}, '
                     f'{len(evals)} evaluations')
    elif metrics.eval:
        lines.append(f'best segm_AP: none of the {len(metrics.eval)} evaluations has one (no '
                     f'mask predicted yet)')
    else:
        lines.append('best segm_AP: no evaluation logged (train with --eval)')
    timed = [r for r in metrics.train if 'batch_time' in r]
    if timed:
        batch = np.mean([r['batch_time'] for r in timed])
        data = np.mean([r.get('data_time', 0.) for r in timed])
        lines.append(f'time per iteration: {batch:.4f} s (data {data:.4f} s), mean of '
                     f'{len(timed)} logged iterations')
    lines += _eta_lines(metrics.train)
    return lines


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dir', help='training output folder holding metrics.jsonl')
    parser.add_argument('--keys', default=None,
                        help=f'comma-separated keys (default: those of {",".join(DEFAULT_KEYS)} '
                             f'the run has)')
    parser.add_argument('--output', default=None, help='PNG path (default RUN_DIR/curves.png)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    metrics = read_metrics(args.run_dir)
    requested = [k.strip() for k in args.keys.split(',') if k.strip()] if args.keys else None
    keys = choose_keys(metrics, requested)
    if not keys:
        raise ConfigError(f'{metrics.path}: none of {",".join(DEFAULT_KEYS)} is logged; '
                          f'choose --keys from {", ".join(sorted(metrics.keys()))}')
    output = args.output or os.path.join(args.run_dir, 'curves.png')
    plot_curves(metrics, keys, output)
    print('\n'.join(summarize(metrics)))
    print(f'wrote {output} ({", ".join(keys)})')


if __name__ == '__main__':
    run_main(main)
