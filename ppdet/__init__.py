"""SOLOv2 instance segmentation on PaddlePaddle, driven by YAML configs."""
import importlib

__version__ = '0.1.0'

# Importing these packages registers every component for the YAML workspace.
for _package in ('data', 'modeling', 'optimizer', 'metrics', 'engine'):
    importlib.import_module(f'{__name__}.{_package}')
