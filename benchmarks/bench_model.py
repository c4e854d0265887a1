"""Model benchmarks on this CPU, against the reference's figures (../shared/reference/PERF.md).

    python benchmarks/bench_model.py [--cases forward,nms,train] [--repeats 3]

Cases, each in its own process so that its peak RSS is its own:

* eager eval forward of ``solov2_r50_fpn_1x`` (batch 1, seeded weights, the parity fixture's
  photo stretched to 512x512 and 800x1216): network and post-processing; the network is the
  reference's op for op, so the in-run baseline is the same network followed by a
  reference-style post-processing (SOLOV2_SPEC 10.1-10.4 as the reference runs it);
* ``MaskMatrixNMS`` on 500 candidates with masks of 128x128 and 200x304, against a
  reference-style implementation (SOLOV2_SPEC 10.3 as the reference writes it: sort, gather
  every mask, full product) measured in the same process on the same input, with a check that
  both keep the same masks with the same scores;
* one training step (forward, backward, Momentum step) at batch 2, 512x512 (``train``, one
  thread; ``train-threads``, the toolkit's default thread count): the reference-equivalent run
  (the reference's network, eager, with MKL's own kernel choice, as PaddleDetection runs on this
  CPU), the toolkit at those kernels (its own gains alone), at its default kernels (with the
  MKL selection of ``ppdet.utils.cpuinfo``) and at AVX2 kernels with oneDNN capped at AVX2
  (an AVX2-only CPU, emulated). The last column divides PERF.md's Zen 2 step (72.0 s, MKL's
  own kernels there too) by the row's time: on the reference-equivalent row it is the factor
  that carries this CPU's figures to that AVX2 machine.

Times are medians of ``--repeats`` runs after one warm-up: wall clock, and the process's CPU
time (steadier when other jobs share the cores). Seeded weights come from the parity fixture
(``../shared/reference/parity``); without it the weights are random and the forward figures
are not comparable.
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY = os.path.join(ROOT, '..', 'shared', 'reference', 'parity')
CONFIG = os.path.join(ROOT, 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.yml')
sys.path.insert(0, ROOT)

# ../shared/reference/PERF.md (seconds; peak RSS in GB)
REFERENCE = {
    'forward 512x512': 2.92, 'forward 800x1216': 7.34,
    'post-processing 512x512': 0.14, 'post-processing 800x1216': 0.85,
    'Matrix NMS 128x128': 0.194, 'Matrix NMS 200x304': 0.676,
    'train step 2x512x512': 15.6, 'train step peak RSS (GB)': 3.1,
    'forward 800x1216 peak RSS (GB)': 2.1,
}


class Timer:
    """Median wall and CPU seconds of ``repeats`` calls after one warm-up."""

    def __init__(self, repeats):
        self.repeats = repeats

    def __call__(self, fn):
        fn()
        wall, cpu = [], []
        for _ in range(self.repeats):
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        return float(np.median(wall)), float(np.median(cpu))


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def build_model():
    import paddle  # noqa: F401
    from ppdet.core.workspace import create, load_config
    cfg = load_config(CONFIG)
    model = create(cfg.architecture, cfg)
    if os.path.isdir(PARITY):
        sys.path.insert(0, PARITY)
        import seeded_weights
        seeded_weights.apply_to_layer(model)
    return model


def photo(height, width):
    """The fixture's photo, normalised and stretched to ``height x width``, ``[1, 3, H, W]``."""
    import cv2
    path = os.path.join(PARITY, '000000014439.jpg')
    if not os.path.isfile(path):
        return np.random.RandomState(0).standard_normal((1, 3, height, width)).astype('float32')
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.
    rgb = (rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    rgb = cv2.resize(rgb.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return rgb.transpose(2, 0, 1)[None].copy()


# --------------------------------------------------------------------------- forward

def reference_style_prediction(head, cate_logits, kernels, mask_feat, im_shape, scale_factor):
    """SOLOV2_SPEC 10.1-10.4 written the way the reference runs it (batch 1, dummy entry,
    data-dependent sizes, interpolate / crop / interpolate, y scale for both axes)."""
    import paddle
    import paddle.nn.functional as F
    channels = mask_feat.shape[1]
    scores = paddle.concat([head.category_scores(c).reshape([-1, head.num_classes])
                            for c in cate_logits])
    kernel_rows = paddle.concat([k.transpose([0, 2, 3, 1]).reshape([-1, channels])
                                 for k in kernels])
    kernel_rows = paddle.concat([kernel_rows, paddle.ones([1, channels])])
    strides = paddle.concat([head.cell_strides, paddle.zeros([1])])
    found = paddle.nonzero(scores > head.score_threshold)
    cells = paddle.concat([found[:, 0], paddle.to_tensor([scores.shape[0]], 'int64')])
    labels = paddle.concat([found[:, 1], paddle.zeros([1], 'int64')])
    cand_scores = paddle.concat([paddle.gather_nd(scores, found), paddle.zeros([1])])
    seg = F.sigmoid(F.conv2d(mask_feat, paddle.gather(kernel_rows, cells)
                             .unsqueeze(-1).unsqueeze(-1)))[0]
    seg_masks = (seg > head.mask_threshold).astype('float32')
    sum_masks = seg_masks.sum((1, 2))
    keep = paddle.nonzero(sum_masks > paddle.gather(strides, cells)).flatten()
    keep = paddle.concat([keep, paddle.to_tensor([cells.shape[0] - 1], keep.dtype)])
    seg, seg_masks = paddle.gather(seg, keep), paddle.gather(seg_masks, keep)
    sum_masks, labels = paddle.gather(sum_masks, keep), paddle.gather(labels, keep)
    cand_scores = paddle.gather(cand_scores, keep) * (seg * seg_masks).sum((1, 2)) / sum_masks
    seg, cand_scores, labels, _ = reference_style_matrix_nms(seg, seg_masks, labels,
                                                             cand_scores, sum_masks)
    h, w = int(im_shape[0, 0]), int(im_shape[0, 1])
    orig = (im_shape[0] / scale_factor[0, 0] + 0.5).astype('int32').tolist()
    up = F.interpolate(seg.unsqueeze(0), size=[4 * mask_feat.shape[2], 4 * mask_feat.shape[3]],
                       mode='bilinear', align_corners=False)[:, :, :h, :w]
    up = F.interpolate(up, size=orig, mode='bilinear', align_corners=False)[0]
    return {'segm': (up > head.mask_threshold).astype('uint8'), 'cate_label': labels,
            'cate_score': cand_scores}


def case_forward(height, width, repeats, threads=1):
    """``threads`` 0: the toolkit's default (:func:`ppdet.engine.env.cpu_threads`)."""
    import paddle
    from ppdet.engine.env import set_cpu_threads
    threads = set_cpu_threads(threads or None)
    model = build_model()
    model.eval()
    image = paddle.to_tensor(photo(height, width))
    im_shape = paddle.to_tensor([[height, width]], 'float32')
    scale_factor = paddle.ones([1, 2])
    timer = Timer(repeats)
    with paddle.no_grad():
        total = timer(lambda: model.predict(image, im_shape, scale_factor))
        outputs = model.extract(image)
        post = timer(lambda: model.solov2_head.get_prediction(*outputs, im_shape, scale_factor))
        ref_post = timer(lambda: reference_style_prediction(model.solov2_head, *outputs,
                                                            im_shape, scale_factor))
        detections = int(model.predict(image, im_shape, scale_factor)['bbox_num'].sum())
    size = f'{height}x{width}' + (f', {threads} threads' if threads > 1 else '')
    network = [t - p for t, p in zip(total, post)]
    return {f'forward {size}': total,
            f'reference-style forward {size}': [n + r for n, r in zip(network, ref_post)],
            f'post-processing {size}': post, f'reference-style post-processing {size}': ref_post,
            f'forward {size} peak RSS (GB)': peak_rss_gb(), f'detections {size}': detections}


# --------------------------------------------------------------------------- Matrix NMS

def reference_style_matrix_nms(seg_preds, seg_masks, labels, scores, sum_masks, sigma=2.0,
                               update_threshold=0.05, pre_nms_top_n=500, post_nms_top_n=100):
    """SOLOV2_SPEC 10.3 written the way the reference runs it, for one image."""
    import paddle
    if scores.shape[0] > pre_nms_top_n:
        _, order = paddle.topk(scores, pre_nms_top_n)
    else:
        order = paddle.argsort(scores, descending=True)
    seg_masks, seg_preds = paddle.gather(seg_masks, order), paddle.gather(seg_preds, order)
    sum_masks, scores = paddle.gather(sum_masks, order), paddle.gather(scores, order)
    labels = paddle.gather(labels, order)
    n = scores.shape[0]
    flat = seg_masks.flatten(1).astype('float32')
    inter = paddle.matmul(flat, flat, transpose_y=True)
    areas = sum_masks.expand([n, n])
    iou = paddle.triu(inter / (areas + areas.t() - inter), diagonal=1)
    label_rows = labels.expand([n, n])
    same = paddle.triu((label_rows == label_rows.t()).astype('float32'), diagonal=1)
    decay_iou = iou * same
    compensate = decay_iou.max(axis=0).expand([n, n]).t()
    decay = (paddle.exp(-sigma * decay_iou ** 2) / paddle.exp(-sigma * compensate ** 2)).min(0)
    scores = scores * decay
    keep = paddle.nonzero(scores >= update_threshold).flatten()
    keep = paddle.concat([keep, paddle.to_tensor([n - 1], keep.dtype)])   # the extra entry
    seg_preds, scores = paddle.gather(seg_preds, keep), paddle.gather(scores, keep)
    labels, kept_order = paddle.gather(labels, keep), paddle.gather(order, keep)
    top = paddle.argsort(scores, descending=True)[:post_nms_top_n]
    return (paddle.gather(seg_preds, top), paddle.gather(scores, top),
            paddle.gather(labels, top), paddle.gather(kept_order, top))


def nms_inputs(height, width, count=500, classes=8, seed=0):
    """``count`` blob masks (soft and binary) with labels and scores."""
    rng = np.random.RandomState(seed)
    ys, xs = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0, height, count), rng.uniform(0, width, count)
    ry, rx = rng.uniform(3, height / 4, count), rng.uniform(3, width / 4, count)
    dist = ((ys[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 + \
        ((xs[None] - cx[:, None, None]) / rx[:, None, None]) ** 2
    soft = (1. / (1. + np.exp(2. * (dist - 1.)))).astype(np.float32)
    return soft, (soft > 0.5), rng.randint(0, classes, count), \
        rng.uniform(0.1, 0.9, count).astype(np.float32)


def case_nms(height, width, repeats):
    import paddle
    from ppdet.modeling import MaskMatrixNMS
    from ppdet.modeling.ops import batched_gather
    soft, binary, labels, scores = [paddle.to_tensor(a) for a in nms_inputs(height, width)]
    binary = binary.astype('float32')
    count = scores.shape[0]
    nms = MaskMatrixNMS(pre_nms_top_n=500, post_nms_top_n=100)
    valid = paddle.ones([1, count], 'bool')

    def ours():
        index, kept_scores, keep = nms(binary.reshape([1, count, -1]), labels.unsqueeze(0),
                                       scores.unsqueeze(0), valid)
        return batched_gather(soft.unsqueeze(0), index), kept_scores, keep, index

    def theirs():
        return reference_style_matrix_nms(soft, binary, labels, scores, binary.sum((1, 2)))

    timer = Timer(repeats)
    with paddle.no_grad():
        mine, ref = timer(ours), timer(theirs)
        _, my_scores, keep, index = ours()
        _, ref_scores, _, ref_index = theirs()
    real = ref_scores.numpy() >= 0.05                 # the reference's extra entry dropped
    keep = keep.numpy()[0]
    same = (np.array_equal(index.numpy()[0][keep], ref_index.numpy()[real]) and
            np.allclose(my_scores.numpy()[0][keep], ref_scores.numpy()[real], atol=1e-6))
    size = f'{height}x{width}'
    return {f'Matrix NMS {size}': mine, f'reference-style Matrix NMS {size}': ref,
            f'Matrix NMS {size} same result': bool(same),
            f'Matrix NMS {size} kept': int(keep.sum())}


# --------------------------------------------------------------------------- train step

def train_batch(batch_size=2, size=512, seed=0):
    """Photos with a few synthetic elliptic instances, targets by the project's generator."""
    import paddle
    from ppdet.data.transforms.solov2_target import Gt2Solov2Target
    rng = np.random.RandomState(seed)
    image = photo(size, size)[0]
    ys, xs = np.mgrid[:size, :size]
    samples = []
    for _ in range(batch_size):
        n = 8
        cy, cx = rng.uniform(60, size - 60, n), rng.uniform(60, size - 60, n)
        ry, rx = rng.uniform(10, 120, n), rng.uniform(10, 120, n)
        masks = ((((ys[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 +
                  ((xs[None] - cx[:, None, None]) / rx[:, None, None]) ** 2) <= 1).astype(np.uint8)
        boxes = np.stack([np.maximum(cx - rx, 0), np.maximum(cy - ry, 0),
                          np.minimum(cx + rx, size), np.minimum(cy + ry, size)], 1)
        samples.append({'image': image, 'gt_bbox': boxes.astype(np.float32),
                        'gt_class': rng.randint(0, 80, (n, 1)).astype(np.int32), 'gt_segm': masks})
    samples = Gt2Solov2Target()(samples)
    batch = {'image': paddle.to_tensor(np.stack([s['image'] for s in samples])),
             'im_shape': paddle.to_tensor([[size, size]] * batch_size, 'float32'),
             'scale_factor': paddle.ones([batch_size, 2]),
             'fg_num': paddle.to_tensor(np.stack([s['fg_num'] for s in samples]))}
    for key in ('cate_label', 'ins_label', 'grid_order'):
        batch[key] = [paddle.to_tensor(np.stack([s[key][l] for s in samples]))
                      for l in range(len(samples[0][key]))]
    return batch


# MKL kernels of each train case: the reference as a user runs it on this CPU (MKL's own
# choice: its generic path on AMD), the toolkit's choice (ppdet.utils.cpuinfo), AVX2 kernels
# with oneDNN capped at AVX2 (an AVX2-only CPU emulated here)
KERNELS = {'mkl-own': {'MKL_DEBUG_CPU_TYPE': ''}, 'toolkit': {},
           'avx2': {'MKL_DEBUG_CPU_TYPE': '5', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}}


def reference_style_fpn_forward(fpn, feats):
    """The FPN as the reference trains it: paddle's conv-with-bias and nearest interpolate."""
    import paddle.nn as nn
    import paddle.nn.functional as F
    laterals = [nn.Conv2D.forward(conv, f) for conv, f in zip(fpn.lateral_convs, feats)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=2.,
                                                          mode='nearest')
    outs = [nn.Conv2D.forward(conv, lat) for conv, lat in zip(fpn.fpn_convs, laterals)]
    for _ in range(fpn.extra_stage):
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
    return outs


def use_reference_ops(model):
    """Where this toolkit trains with cheaper backward passes (``layers.train_ops``), run the
    reference's ops instead: the network as the reference trains it."""
    import types
    model.neck.forward = types.MethodType(reference_style_fpn_forward, model.neck)
    model.mask_head._run_tower = lambda tower, x: tower(x)


def case_train(repeats, threads=1, kernels='toolkit', network='toolkit'):
    """One training step (forward, backward, Momentum step) at batch 2, 512x512;
    ``network='reference'``: see :func:`use_reference_ops`."""
    import paddle
    from ppdet.engine.env import set_cpu_threads
    threads = set_cpu_threads(threads or None)
    model = build_model()
    if network == 'reference':
        use_reference_ops(model)
    model.train()
    optimizer = paddle.optimizer.Momentum(
        learning_rate=0.001, momentum=0.9, parameters=model.parameters(),
        weight_decay=paddle.regularizer.L2Decay(1e-4))
    batch = train_batch()

    def step():
        loss = model(batch)['loss']
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    key = f'train step 2x512x512, {network} network, {kernels} kernels, {threads} thread(s)'
    return {key: Timer(repeats)(step), f'{key} peak RSS (GB)': peak_rss_gb()}


CASES = {
    'forward': [('forward', 512, 512, 1), ('forward', 800, 1216, 1)],
    'forward-threads': [('forward', 512, 512, 0), ('forward', 800, 1216, 0)],
    'nms': [('nms', 128, 128), ('nms', 200, 304)],
    # the reference-equivalent run first: the ratios of the train table are to it
    'train': [('train', 1, 'mkl-own', 'reference'), ('train', 1, 'mkl-own', 'toolkit'),
              ('train', 1, 'toolkit', 'toolkit'), ('train', 1, 'avx2', 'toolkit')],
    'train-threads': [('train', 0, 'toolkit', 'toolkit'), ('train', 0, 'avx2', 'toolkit')],
}


def run_case(spec, repeats):
    if spec[0] == 'forward':
        return case_forward(spec[1], spec[2], repeats, threads=spec[3])
    if spec[0] == 'nms':
        return case_nms(spec[1], spec[2], repeats)
    return case_train(repeats, *spec[1:])


TRAIN_REFERENCE = 'train step 2x512x512, reference network, mkl-own kernels, 1 thread(s)'


def print_train_table(results):
    """Train steps against the reference-equivalent run of the same benchmark."""
    rows = [(k, v) for k, v in results.items() if k.startswith('train step') and
            isinstance(v, list)]
    if not rows:
        return
    ref = results.get(TRAIN_REFERENCE)
    ref_rss = results.get(TRAIN_REFERENCE + ' peak RSS (GB)')
    print('\n| train step, batch 2, 512x512 | wall s | CPU s | peak RSS GB | wall vs reference-'
          'equivalent | PERF.md (Xeon 15.6 s, Zen 2 72.0 s) |')
    print('| --- | ---: | ---: | ---: | ---: | --- |')
    for key, (wall, cpu) in rows:
        rss = results.get(key + ' peak RSS (GB)', 0.)
        ratio = f'{wall / ref[0]:.2f}x' if ref else ''
        print(f'| {key[len("train step 2x512x512, "):]} | {wall:.2f} | {cpu:.2f} | {rss:.2f}'
              f' | {ratio} | Zen 2 / this CPU: {72.0 / wall:.2f} |')
    if ref:
        print(f'\nreference-equivalent = the reference network, eager, MKL\'s own kernel choice,'
              f' one thread (as PaddleDetection runs by default); peak RSS {ref_rss:.2f} GB')


def print_table(results):
    print('| what | ours: wall s | ours: CPU s | reference | ratio (wall) | ratio (CPU) |')
    print('| --- | ---: | ---: | ---: | ---: | ---: |')
    for key, value in results.items():
        if key.startswith('train step'):
            continue
        if isinstance(value, list):
            ref = REFERENCE.get(key)
            style = results.get('reference-style ' + key)
            if key.startswith('reference-style'):
                ref_text, ratios = 'in-run baseline', ('', '')
            elif style:       # compared with the in-run reference-style implementation
                ref_text = f'{style[0]:.3f} (in run; PERF.md {ref})'
                ratios = (f'{value[0] / style[0]:.2f}x', f'{value[1] / style[1]:.2f}x')
            else:
                ref_text = f'{ref} (PERF.md)' if ref else '-'
                ratios = (f'{value[0] / ref:.2f}x', f'{value[1] / ref:.2f}x') if ref else ('', '')
            print(f'| {key} | {value[0]:.3f} | {value[1]:.3f} | {ref_text} | {ratios[0]} | '
                  f'{ratios[1]} |')
        else:
            ref = REFERENCE.get(key)
            shown = f'{value:.2f}' if isinstance(value, float) else str(value)
            ratio = f'{value / ref:.2f}x' if ref else ''
            print(f'| {key} | {shown} | | {ref or "-"} | {ratio} | |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', default='forward,forward-threads,nms,train,train-threads',
                        help='forward and train run on one thread, as the reference does; '
                             'forward-threads and train-threads on the toolkit\'s default '
                             'thread count; nms')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(json.loads(args.child), args.repeats)))
        return
    from ppdet.utils.cpuinfo import describe_cpu
    load_before = os.getloadavg()[0]
    results = {}
    for name in args.cases.split(','):
        for spec in CASES[name]:
            env = dict(os.environ, **KERNELS[spec[2]]) if spec[0] == 'train' else None
            proc = subprocess.run([sys.executable, __file__, '--repeats', str(args.repeats),
                                   '--child', json.dumps(spec)], capture_output=True, text=True,
                                  env=env)
            if proc.returncode:
                sys.exit(f'benchmark {spec} failed:\n{proc.stderr[-2000:]}')
            results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f'{describe_cpu()}; paddle {paddle_version()}; {datetime.date.today()}; load average '
          f'before {load_before:.2f}, after {os.getloadavg()[0]:.2f}\n')
    print_table(results)
    print_defaults(results)
    print_train_table(results)


def paddle_version():
    from importlib.metadata import version
    return version('paddlepaddle')


def print_defaults(results):
    """Each side at its own default: the toolkit on every core, the reference on one thread."""
    rows = [(key, value[0] / results['reference-style ' + key.split(',')[0]][0])
            for key, value in results.items() if isinstance(value, list) and ' threads' in key
            and key.startswith('forward') and 'reference-style ' + key.split(',')[0] in results]
    if rows:
        print('\n| defaults: toolkit (all cores) vs reference-style (1 thread) | ratio (wall) |')
        print('| --- | ---: |')
        for key, ratio in rows:
            print(f'| {key} | {ratio:.2f}x |')


if __name__ == '__main__':
    main()
