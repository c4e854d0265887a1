"""``python tools/infer.py``, PaddleDetection's path: ``python infer.py`` with the same flags."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from infer import main  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402

if __name__ == '__main__':
    run_main(main)
