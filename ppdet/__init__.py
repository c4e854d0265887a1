"""SOLOv2 instance segmentation on PaddlePaddle, driven by YAML configs."""
import importlib
import os

__version__ = '0.1.0'

# ``import paddle`` sets OMP_NUM_THREADS=1 when it is unset; remember what the user chose
# before that happens (see ppdet.engine.env.cpu_threads).
USER_OMP_NUM_THREADS = os.environ.get('OMP_NUM_THREADS')

# Importing these packages registers every component for the YAML workspace.
for _package in ('data', 'modeling', 'optimizer', 'metrics', 'engine'):
    importlib.import_module(f'{__name__}.{_package}')
