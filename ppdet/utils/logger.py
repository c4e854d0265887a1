"""One logger setup for the scripts: rank 0 prints, other ranks only warn."""
import logging
import sys

__all__ = ['setup_logger']


def setup_logger(rank=0, name='ppdet'):
    logger = logging.getLogger(name)
    if getattr(logger, '_configured', False):
        return logger
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('[%(asctime)s] %(levelname)s: %(message)s',
                                           datefmt='%H:%M:%S'))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    logger._configured = True
    return logger
