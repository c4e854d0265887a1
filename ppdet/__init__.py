"""SOLOv2 instance segmentation on PaddlePaddle, driven by YAML configs."""
import importlib
import os
import sys

__version__ = '0.1.0'

# ``import paddle`` sets OMP_NUM_THREADS=1 when it is unset: what the user chose can only be
# read before that (see ppdet.engine.env.cpu_threads); None when unknown.
USER_OMP_NUM_THREADS = None if 'paddle' in sys.modules else os.environ.get('OMP_NUM_THREADS')

# Before MKL's first call: its fast kernels on non-Intel CPUs (see ppdet.utils.cpuinfo).
from .utils.cpuinfo import select_mkl_kernels  # noqa: E402

MKL_CPU_TYPE = select_mkl_kernels()

# Importing these packages registers every component for the YAML workspace.
for _package in ('data', 'modeling', 'optimizer', 'metrics', 'engine'):
    importlib.import_module(f'{__name__}.{_package}')
