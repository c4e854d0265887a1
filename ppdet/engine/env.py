"""Device, process group and random seeds."""
import logging
import random

import numpy as np
import paddle
import paddle.distributed as dist

__all__ = ['select_device', 'init_distributed', 'seed_everything', 'epoch_seed']

logger = logging.getLogger('ppdet')


def select_device(use_gpu):
    """``'gpu'`` when asked for and available, else ``'cpu'`` (quietly)."""
    device = 'gpu' if use_gpu and paddle.is_compiled_with_cuda() and \
        paddle.device.cuda.device_count() > 0 else 'cpu'
    paddle.set_device(device)
    return device


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
