"""``python tools/train.py``, PaddleDetection's path: ``python train.py`` with the same flags."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train import main  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402

if __name__ == '__main__':
    run_main(main)
