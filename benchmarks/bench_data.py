"""Data pipeline benchmark: images/s of the train pipeline and ms/image of the SOLOv2 targets.

    python benchmarks/bench_data.py [--repeats 3] [--epochs 1] [--workers 0 2] [--step]

The targets are timed against `reference_targets` (tests/fixtures/reference_targets.py), a
direct loop-based transcription of the reference `Gt2Solov2Target` that the tests also use as an
independent check, run in the same process on the same inputs.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
from fixtures.reference_targets import reference_targets  # noqa: E402

CONFIG = os.path.join(ROOT, 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.yml')
PERSON = os.path.join(ROOT, '..', 'shared', 'data', 'coco_person60')
FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']


def person_dataset():
    if not os.path.isdir(PERSON):
        sys.exit(f'{PERSON} is not present: the benchmark reads real COCO images from it')
    from ppdet.data import COCODataSet
    return COCODataSet(PERSON, 'images/train2017', 'annotations/person_keypoints_train2017.json',
                       data_fields=FIELDS, repeat=4)


def padded_batches(cfg, dataset, batch_size=2):
    """The reader's samples right before Gt2Solov2Target (800x1333, no flip)."""
    from ppdet.core.workspace import create
    reader = create('TrainReader', cfg)
    sample_ops = [op for op in reader.sample_ops if type(op).__name__ != 'RandomFlip']
    pad, target = reader.batch_ops
    records = len(dataset.records)
    batches = []
    for start in range(0, records - batch_size + 1, batch_size):
        samples = []
        for i in range(start, start + batch_size):
            sample = dataset[i]
            for op in sample_ops:
                sample = op(sample, None)
            samples.append(sample)
        batches.append(pad(samples))
    return batches, target


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_targets(cfg, dataset, repeats):
    batches, target = padded_batches(cfg, dataset)
    images = sum(len(b) for b in batches)
    instances = sum(len(s['gt_bbox']) for b in batches for s in b)
    for batch in batches:                        # identical output, checked in the same run
        for a, b in zip(target(batch), reference_targets(batch, target.num_grids,
                                                         target.scale_ranges)):
            assert a['fg_num'] == b['fg_num'] and all(
                np.array_equal(x, y) for key in ('cate_label', 'ins_label', 'grid_order')
                for x, y in zip(a[key], b[key]))
    ours = median_time(lambda: [target(b) for b in batches], repeats) / images * 1e3
    ref = median_time(lambda: [reference_targets(b, target.num_grids, target.scale_ranges)
                               for b in batches], repeats) / images * 1e3
    hw = sorted({b[0]['image'].shape[1:] for b in batches})
    print(f'Gt2Solov2Target, {images} images ({instances / images:.1f} instances/image, '
          f'padded sizes {hw[0]}..{hw[-1]}), outputs identical:')
    print(f'  {"reference-style loops":<24} {ref:8.2f} ms/image')
    print(f'  {"vectorised (ours)":<24} {ours:8.2f} ms/image   speed-up x{ref / ours:.1f}')


def bench_loader(cfg, dataset, workers, epochs):
    from ppdet.core.workspace import create
    rows = []
    for n, shared in [(n, s) for n in workers for s in ([False, True] if n else [False])]:
        reader = create('TrainReader', cfg)
        reader.use_shared_memory = shared
        loader = reader.loader(dataset, num_workers=n)
        loader.set_epoch(0)
        next(iter(loader))                                   # start-up not counted
        images, start = 0, time.perf_counter()
        for epoch in range(epochs):
            loader.set_epoch(epoch + 1)
            for batch in loader:
                images += batch['image'].shape[0]
        seconds = time.perf_counter() - start
        rows.append((n, shared, images / seconds, images / seconds / reader.batch_size))
    print(f'full train pipeline (Decode .. Gt2Solov2Target, 800x1333, batch 2), '
          f'{len(dataset)} images/epoch x {epochs}:')
    for n, shared, ips, bps in rows:
        memory = ', shared memory' if shared else ''
        print(f'  {f"workers {n}{memory}":<28} {ips:7.2f} images/s  {bps:6.2f} batches/s')
    return rows


def bench_step(cfg, dataset):
    """Seconds of one training step (forward, backward, optimizer) of the config's model."""
    import paddle
    from ppdet.core.workspace import create
    loader = create('TrainReader', cfg).loader(dataset)
    batch = next(iter(loader))
    model = create(cfg['architecture'], cfg)
    model.train()
    opt = paddle.optimizer.Momentum(0.0, parameters=model.parameters())

    def step():
        loss = model(batch)['loss']
        loss.backward()
        opt.step()
        opt.clear_grad()
    step()
    return median_time(step, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--step', action='store_true',
                        help='also time one r50 training step to compare with the loader')
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from ppdet.core.workspace import load_config
    cfg = load_config(CONFIG)
    dataset = person_dataset()
    bench_targets(cfg, dataset, args.repeats)
    rows = bench_loader(cfg, dataset, args.workers, args.epochs)
    if args.step:
        seconds = bench_step(cfg, dataset)
        print(f'one training step ({cfg["filename"]}, batch 2): {seconds:.2f} s = '
              f'{1 / seconds:.3f} batches/s')
        for n, shared, _, bps in rows:
            print(f'  loader with {n} workers{" (shared memory)" if shared else ""} delivers '
                  f'x{bps * seconds:.1f} what training consumes')


if __name__ == '__main__':
    main()
