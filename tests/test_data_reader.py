"""Readers: batch layout, seeded determinism across workers and resume, grids from the head."""
import os
import textwrap

import numpy as np
import pytest

from ppdet.core.config import Config
from ppdet.core.errors import ConfigError, DataError
from ppdet.core.workspace import REGISTRY, create, get_schema, load_config, merge_config
from ppdet.data import build_dataset, build_loader, generate_quickstart
from ppdet.data.reader import EpochBatchSampler

from conftest import ROOT

FIELDS = ['image', 'gt_bbox', 'gt_class', 'gt_poly', 'is_crowd']
GRIDS = [24, 16, 12, 8, 6]
RANGES = [[1, 32], [16, 64], [32, 128], [64, 256], [128, 512]]


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('data') / 'quickstart'
    generate_quickstart(str(root), num_train=10, num_val=3, image_size=128, seed=1)
    return root


def train_config(root, **top):
    return Config({
        'TrainDataset': {'name': 'COCODataSet', 'dataset_dir': str(root), 'image_dir': 'train',
                         'anno_path': 'annotations/instances_train.json', 'data_fields': FIELDS},
        'EvalDataset': {'name': 'COCODataSet', 'dataset_dir': str(root), 'image_dir': 'val',
                        'anno_path': 'annotations/instances_val.json'},
        'TrainReader': {
            'sample_transforms': [{'Decode': {}}, {'Poly2Mask': {}},
                                  {'RandomResize': {'target_size': [[96, 96], [128, 128]]}},
                                  {'RandomFlip': {}}, {'NormalizeImage': {}}, {'Permute': {}}],
            'batch_transforms': [{'PadBatch': {'pad_to_stride': 32}},
                                 {'Gt2Solov2Target': {'num_grids': GRIDS,
                                                      'scale_ranges': RANGES}}],
            'batch_size': 3, 'shuffle': True, 'drop_last': True},
        'EvalReader': {
            'sample_transforms': [{'Decode': {}}, {'NormalizeImage': {}},
                                  {'Resize': {'target_size': [96, 96]}}, {'Permute': {}}],
            'batch_transforms': [{'PadBatch': {'pad_to_stride': 32}}], 'batch_size': 2},
        'worker_num': 0, **top})


def as_numpy(batch):
    return {k: [t.numpy() for t in v] if isinstance(v, list) else v.numpy()
            for k, v in batch.items()}


def epoch_batches(loader, epoch, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return [as_numpy(b) for b in loader]


def same_batches(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for key in x:
            xs, ys = (x[key], y[key]) if isinstance(x[key], list) else ([x[key]], [y[key]])
            if not all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(xs, ys)):
                return False
    return True


def test_train_batches_have_the_documented_layout(shapes_dir):
    cfg = train_config(shapes_dir)
    loader = build_loader(cfg, 'train')
    assert len(loader) == 3                              # 10 images, batch 3, drop_last
    batch = as_numpy(next(iter(loader)))
    assert set(batch) == {'image', 'im_shape', 'scale_factor', 'im_id', 'cate_label',
                          'ins_label', 'grid_order', 'fg_num'}
    b, c, hp, wp = batch['image'].shape
    assert (b, c) == (3, 3) and hp % 32 == 0 and wp % 32 == 0 and batch['image'].dtype == np.float32
    assert batch['im_shape'].shape == (3, 2) and batch['scale_factor'].dtype == np.float32
    assert batch['im_id'].shape == (3, 1) and batch['im_id'].dtype == np.int64
    assert [c.shape for c in batch['cate_label']] == [(3, s * s) for s in GRIDS]
    for ins, order in zip(batch['ins_label'], batch['grid_order']):
        assert ins.dtype == np.uint8 and ins.shape[::2] == (3, hp // 4) and ins.shape[3] == wp // 4
        assert order.dtype == np.int32 and order.shape == ins.shape[:2]
    assert batch['fg_num'].shape == (3,) and batch['fg_num'].dtype == np.int64
    assert batch['fg_num'].sum() > 0


def test_eval_batches_keep_every_image_in_order(shapes_dir):
    loader = build_loader(train_config(shapes_dir), 'eval')
    batches = [as_numpy(b) for b in loader]
    assert len(loader) == len(batches) == 2
    assert [i for b in batches for i in b['im_id'].reshape(-1)] == [1, 2, 3]
    assert set(batches[0]) == {'image', 'im_shape', 'scale_factor', 'im_id'}


def test_batches_depend_on_seed_and_epoch_only(shapes_dir):
    cfg = train_config(shapes_dir, seed=7)
    dataset = build_dataset(cfg, 'train')
    serial = build_loader(cfg, 'train', dataset, num_workers=0)
    parallel = build_loader(cfg, 'train', dataset, num_workers=2)
    first = epoch_batches(serial, 1)
    assert same_batches(first, epoch_batches(parallel, 1))          # workers change nothing
    assert same_batches(first[1:], epoch_batches(serial, 1, start_batch=1))   # resume
    assert same_batches(first, epoch_batches(build_loader(cfg, 'train', dataset), 1))
    assert not same_batches(first, epoch_batches(serial, 2))        # a new epoch reshuffles
    other_seed = build_loader(train_config(shapes_dir, seed=8), 'train', dataset)
    assert not same_batches(first, epoch_batches(other_seed, 1))


def test_ranks_split_each_epoch_without_overlap():
    ranks = [EpochBatchSampler(10, 2, True, False, seed=3, num_replicas=2, rank=r)
             for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(4)
    seen = [[i for batch in sampler for _, i in batch] for sampler in ranks]
    assert len(seen[0]) == len(seen[1]) == 5
    assert sorted(seen[0] + seen[1]) == list(range(10))
    assert seen[0] + seen[1] != list(range(10))


def test_bad_sample_at_run_time_stops_or_is_replaced(shapes_dir, tmp_path, caplog):
    import shutil
    root = tmp_path / 'copy'
    shutil.copytree(shapes_dir, root)
    for skip in (False, True):
        cfg = train_config(root, skip_bad_samples=skip)
        dataset = build_dataset(cfg, 'train')
        loader = build_loader(cfg, 'train', dataset)
        loader.set_epoch(0)
        victim = dataset.records[loader.batch_sampler.order()[0]]['im_file']
        name = os.path.basename(victim)
        shutil.copy(victim, tmp_path / 'saved.png')
        with open(victim, 'wb') as f:                    # broken after the dataset check
            f.write(b'garbage')
        if not skip:
            with pytest.raises(DataError, match=f'{name}: not a decodable image'):
                epoch_batches(loader, 0)
        else:
            assert len(epoch_batches(loader, 0)) == 3
            assert 'skipping a bad sample' in caplog.text and name in caplog.text
        shutil.copy(tmp_path / 'saved.png', victim)


# -- grids come from the head ---------------------------------------------------------------
HEAD_GRIDS = [6, 5, 4, 3, 2]


def write_configs(tmp_path, target_args, head_args=f'{{num_grids: {HEAD_GRIDS}}}'):
    (tmp_path / 'model.yml').write_text(textwrap.dedent(f"""
        architecture: SOLOv2
        SOLOv2: {{backbone: ResNet, neck: FPN, solov2_head: SOLOv2Head,
                  mask_head: SOLOv2MaskHead}}
        SOLOv2Head: {head_args}
    """))
    (tmp_path / 'reader.yml').write_text(textwrap.dedent(f"""
        _BASE_: [model.yml]
        TrainReader:
          batch_transforms:
          - PadBatch: {{pad_to_stride: 32}}
          - Gt2Solov2Target: {target_args}
    """))
    return str(tmp_path / 'reader.yml')


def test_target_grids_default_to_the_head(tmp_path):
    cfg = load_config(write_configs(tmp_path, '{}'))
    target = create('TrainReader', cfg).batch_ops[1]
    assert target.num_grids == HEAD_GRIDS                    # the head's section
    assert target.scale_ranges == get_schema(REGISTRY['SOLOv2Head']).defaults['scale_ranges']


def test_equal_grids_in_both_places_are_accepted(tmp_path):
    cfg = load_config(write_configs(tmp_path, f'{{num_grids: {HEAD_GRIDS}, coord_sigma: 0.3}}'))
    target = create('TrainReader', cfg).batch_ops[1]
    assert target.num_grids == HEAD_GRIDS and target.coord_sigma == 0.3


def test_conflicting_grids_name_both_places(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write_configs(tmp_path, '{num_grids: [6, 5, 4, 3, 3]}'))
    message = str(err.value)
    assert 'reader.yml' in message and 'model.yml' in message
    assert 'Gt2Solov2Target.num_grids [6, 5, 4, 3, 3]' in message
    assert 'SOLOv2Head.num_grids' in message
    with pytest.raises(ConfigError, match=r'scale_ranges.*default of SOLOv2Head'):
        load_config(write_configs(tmp_path, '{scale_ranges: [[1, 64], [32, 256]]}'))


def test_override_that_breaks_the_agreement_is_refused(tmp_path):
    cfg = load_config(write_configs(tmp_path, f'{{num_grids: {HEAD_GRIDS}}}'))
    with pytest.raises(ConfigError, match='differs from SOLOv2Head.num_grids'):
        merge_config(['SOLOv2Head.num_grids=[9, 9, 9, 9, 9]'], cfg)


def test_head_grids_of_unequal_lengths_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r'model\.yml: SOLOv2Head: .*one entry per level'):
        load_config(write_configs(tmp_path, '{}', head_args='{num_grids: [6, 4]}'))


@pytest.mark.parametrize('name', ['solov2/solov2_r50_fpn_1x_coco.yml', 'solov2_r50_enhance_coco.yml',
                                  'solov2/solov2_r101_vd_fpn_3x_coco.yml', 'quickstart.yml'])
def test_seed_configs_build_their_readers(name):
    cfg = load_config(os.path.join(ROOT, 'configs', name))
    head = cfg[cfg[cfg.architecture]['solov2_head']]
    target = create('TrainReader', cfg).batch_ops[-1]
    assert target.num_grids == head['num_grids']
    defaults = get_schema(REGISTRY['SOLOv2Head']).defaults
    assert target.scale_ranges == head.get('scale_ranges', defaults['scale_ranges'])
    for reader in ('EvalReader', 'TestReader'):
        create(reader, cfg)


class _ListDataset:
    def __init__(self, n):
        self.items = [{'image': np.full((3, 4, 4), i, np.float32), 'im_id': np.array([i])}
                      for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])


class _Explode:
    def __call__(self, samples):
        raise ValueError('a bug in a batch transform')


@pytest.mark.parametrize('workers', [0, 2])
def test_errors_in_loading_reach_the_caller_instead_of_hanging(workers):
    from ppdet.data import Loader
    loader = Loader(_ListDataset(4), [], [_Explode()], batch_size=2, num_workers=workers)
    with pytest.raises(RuntimeError, match='ValueError: a bug in a batch transform'):
        next(iter(loader))
    ok = Loader(_ListDataset(4), [], [], batch_size=2, num_workers=workers)
    assert [b['im_id'].numpy().ravel().tolist() for b in ok] == [[0, 1], [2, 3]]


def test_shared_memory_workers_keep_empty_levels_zero_length(shapes_dir):
    cfg = train_config(shapes_dir)
    cfg['TrainReader']['use_shared_memory'] = True
    dataset = build_dataset(cfg, 'train')
    shared = epoch_batches(build_loader(cfg, 'train', dataset, num_workers=2), 0)
    serial = epoch_batches(build_loader(cfg, 'train', dataset, num_workers=0), 0)
    assert same_batches(shared, serial)
    empty = [rows.shape for b in shared for rows in b['ins_label'] if rows.shape[1] == 0]
    assert empty and all(len(shape) == 4 for shape in empty)       # [B, 0, Hm, Wm]
    assert all('empty_levels' not in b for b in shared)


def test_eval_split_gives_each_image_to_exactly_one_rank():
    ranks = [EpochBatchSampler(5, 2, False, False, seed=0, num_replicas=2, rank=r, even=False)
             for r in range(2)]
    batches = [[[i for _, i in batch] for batch in sampler] for sampler in ranks]
    assert batches == [[[0, 2], [4]], [[1, 3]]]
    assert [len(s) for s in ranks] == [2, 1]
    padded = [EpochBatchSampler(5, 2, False, False, seed=0, num_replicas=2, rank=r)
              for r in range(2)]
    assert [len(s) for s in padded] == [2, 2]          # training pads: same steps on each rank
