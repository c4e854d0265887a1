"""Generate the quick-start dataset (4 classes of shapes, COCO format, train + val splits).

`configs/quickstart.yml` does this on first use; run it by hand to choose the folder, sizes
or seed.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.errors import DataError  # noqa: E402
from ppdet.data.source.quickstart import generate_quickstart  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='dataset/quickstart', help='dataset folder to create')
    parser.add_argument('--train', type=int, default=300, help='training images')
    parser.add_argument('--val', type=int, default=50, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    args = parser.parse_args(argv)
    if os.path.exists(args.out):
        raise DataError(f'{args.out}: already exists; remove it first to regenerate')
    seconds = generate_quickstart(args.out, args.train, args.val, args.size, args.seed)
    print(f'wrote {args.train} train + {args.val} val images to {args.out} in {seconds:.1f} s')


if __name__ == '__main__':
    run_main(main)
