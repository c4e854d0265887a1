"""Top-level config keys that are not component sections, and what their values may be.

PaddleDetection keys that mean nothing here (other devices, FLOPs printing, export switches)
are accepted so that its configs load; one that asks for something gets one warning naming it.
"""
from .errors import ConfigError
from .workspace import closest, short_repr

__all__ = ['RUNTIME_KEYS', 'COMPATIBILITY_KEYS', 'EXPORT_KEYS', 'check_runtime_values']

# key -> (the value that asks for nothing, what happens instead)
COMPATIBILITY_KEYS = {
    'use_xpu': (False, 'XPU devices are not supported: the run uses the GPU or the CPU'),
    'use_mlu': (False, 'MLU devices are not supported: the run uses the GPU or the CPU'),
    'use_npu': (False, 'NPU devices are not supported: the run uses the GPU or the CPU'),
    'print_flops': (False, 'tools/model_stats.py prints the FLOPs per module'),
    'print_params': (False, 'tools/model_stats.py prints the parameters per module'),
}
# the ``export`` section's keys, likewise
EXPORT_KEYS = {
    'post_process': (True, 'the export always holds the post-processing (Matrix NMS, masks '
                           'at the original size)'),
    'nms': (True, 'the export always holds Matrix NMS'),
    'benchmark': (False, 'benchmarks/bench_infer.py times an export'),
    'fuse_conv_bn': (False, 'convolutions and norms are exported unfused'),
}

RUNTIME_KEYS = {
    'architecture', 'filename', 'weights', 'pretrain_weights', 'metric', 'num_classes',
    'use_gpu', 'log_iter', 'save_dir', 'snapshot_epoch', 'epoch', 'max_iters', 'worker_num',
    'use_ema', 'ema_decay', 'norm_type', 'find_unused_parameters', 'amp', 'amp_level',
    'init_loss_scaling', 'custom_white_list', 'custom_black_list', 'use_vdl', 'vdl_log_dir',
    'keep_checkpoint_max', 'nan_policy', 'skip_bad_samples', 'patience', 'seed',
    'TrainDataset', 'EvalDataset', 'TestDataset', 'LearningRate', 'OptimizerBuilder',
    'TrainReader', 'EvalReader', 'TestReader', 'draw_threshold', 'eval', 'classwise',
    'output_eval', 'cpu_threads', 'export', 'inference_engine',
} | set(COMPATIBILITY_KEYS)

_CHOICES = {'metric': ('COCO',), 'nan_policy': ('stop', 'skip'), 'amp_level': ('O1', 'O2')}
_COUNTS = ('log_iter', 'snapshot_epoch')        # used as divisors: positive integers


def check_runtime_values(cfg):
    """Refuse values that cannot work; warn once per key for compatibility keys that ask for
    something this toolkit does not do."""
    for key, choices in _CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            raise ConfigError(f'{_where(cfg, key)}: {key} must be one of {", ".join(choices)}, '
                              f'got {short_repr(cfg[key])}')
    for key in _COUNTS:
        value = cfg.get(key)
        if key in cfg and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f'{_where(cfg, key)}: {key} must be a positive integer, '
                              f'got {short_repr(value)}')
    for key, (inert, instead) in COMPATIBILITY_KEYS.items():
        if key in cfg and cfg[key] != inert:
            _warn(cfg, key, cfg[key], instead)
    export = cfg.get('export')
    if export is None:
        return
    if not isinstance(export, dict):
        raise ConfigError(f'{_where(cfg, "export")}: `export` must be a mapping of keys, got '
                          f'{short_repr(export)}')
    for key, value in export.items():
        if key not in EXPORT_KEYS:
            raise ConfigError(f'{_where(cfg, "export")}: unknown key `{key}` in section `export`'
                              f'{closest(key, EXPORT_KEYS)}')
        inert, instead = EXPORT_KEYS[key]
        if value != inert:
            _warn(cfg, f'export.{key}', value, instead)


def _where(cfg, key):
    return cfg.source_of(key) or 'config'


def _warn(cfg, name, value, instead):
    cfg.warn_once(name, f'{_where(cfg, name.split(".")[0])}: {name}: {short_repr(value)} has no '
                        f'effect here ({instead})')
