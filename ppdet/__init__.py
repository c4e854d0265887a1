"""SOLOv2 instance segmentation on PaddlePaddle, driven by YAML configs."""
import importlib
import os
import sys
import warnings

__version__ = '0.1.0'

# ``import paddle`` sets OMP_NUM_THREADS=1 when it is unset: what the user chose can only be
# read before that (see ppdet.engine.env.cpu_threads); None when unknown.
USER_OMP_NUM_THREADS = None if 'paddle' in sys.modules else os.environ.get('OMP_NUM_THREADS')

# Notices of paddle's that a user can do nothing about: no ccache (it would speed up compiling
# custom C++ operators, which the toolkit never does), BatchNorm's "we now always track global
# mean and variance" on every run, and the static graph's "no 'place' interface", four times
# whenever eval.py or infer.py exports a program.
warnings.filterwarnings('ignore', message='No ccache found', category=UserWarning,
                        module=r'paddle\.utils\.cpp_extension')
warnings.filterwarnings('ignore', message='When training, we now always track global mean',
                        category=UserWarning, module=r'paddle\.nn\.layer\.norm')
warnings.filterwarnings('ignore', message="Tensor do not have 'place' interface",
                        category=UserWarning, module=r'paddle\.pir\.math_op_patch')

# Before MKL's first call: its fast kernels on non-Intel CPUs (see ppdet.utils.cpuinfo).
from .utils.cpuinfo import select_mkl_kernels  # noqa: E402

MKL_CPU_TYPE = select_mkl_kernels()

# Importing these packages registers every component for the YAML workspace.
for _package in ('data', 'modeling', 'optimizer', 'metrics', 'engine'):
    importlib.import_module(f'{__name__}.{_package}')
