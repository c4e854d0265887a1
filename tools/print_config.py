"""Print the fully merged config: what `_BASE_` files and `-o` overrides produced."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.config import dump_config  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main  # noqa: E402


def main(argv):
    args = ArgsParser(description=__doc__).parse_args(argv)
    print(dump_config(load_cli_config(args)), end='')


if __name__ == '__main__':
    run_main(main)
