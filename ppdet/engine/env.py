"""Device, process group and random seeds."""
import logging
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

from ppdet.core.config import config_check
from ppdet.core.errors import ConfigError

__all__ = ['select_device', 'cpu_threads', 'set_cpu_threads', 'init_distributed',
           'seed_everything', 'epoch_seed']

logger = logging.getLogger('ppdet')


def select_device(use_gpu):
    """``'gpu'`` when asked for and available, else ``'cpu'`` (quietly)."""
    device = 'gpu' if use_gpu and paddle.is_compiled_with_cuda() and \
        paddle.device.cuda.device_count() > 0 else 'cpu'
    paddle.set_device(device)
    return device


def cpu_threads(requested=None, user_env=None, cores=None, local_ranks=None):
    """Math-library threads for one process on the CPU.

    ``requested`` (the ``cpu_threads`` config key) wins, then ``OMP_NUM_THREADS`` as the user
    set it; otherwise the usable cores are shared among the ranks on this machine. Paddle alone
    would run its CPU kernels on one thread.
    """
    if requested is not None:
        if not _is_thread_count(requested):
            raise ConfigError(f'cpu_threads must be a positive integer or null, '
                              f'got {requested!r}')
        return requested
    if user_env and user_env.strip().isdigit() and int(user_env) > 0:
        return int(user_env)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') \
            else os.cpu_count() or 1
    if local_ranks is None:
        local_ranks = int(os.environ.get('PADDLE_LOCAL_SIZE', '1') or 1)
    return max(cores // max(local_ranks, 1), 1)


def _is_thread_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@config_check
def _check_cpu_threads(cfg):
    value = cfg.get('cpu_threads')
    if value is not None and not _is_thread_count(value):
        raise ConfigError(f'{cfg.source_of("cpu_threads") or "config"}: cpu_threads must be a '
                          f'positive integer or null, got {value!r}')


def set_cpu_threads(requested=None):
    """Apply :func:`cpu_threads` to this process; returns the thread count."""
    import ppdet
    threads = cpu_threads(requested, ppdet.USER_OMP_NUM_THREADS)
    paddle.base.core.set_num_threads(threads)
    return threads


def init_distributed():
    """``(rank, world_size)``; sets up the process group under paddle.distributed.launch."""
    world = dist.get_world_size()
    if world > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), world


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    paddle.seed(seed)


def epoch_seed(seed, epoch):
    """The seed of one epoch: a resumed run re-seeds every generator exactly as the first run."""
    return (seed * 1000003 + epoch) % 2 ** 31
