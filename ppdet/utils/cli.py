"""Command-line plumbing shared by the scripts: ``-c``, ``-o``, ``--debug`` and clean errors."""
import argparse
import sys
import traceback

from ppdet.core.errors import PPDetError

__all__ = ['ArgsParser', 'run_main', 'load_cli_config']


class ArgsParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with the options every script takes."""

    def __init__(self, *args, config_required=True, **kwargs):
        kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument('-c', '--config', required=config_required, help='config file (YAML)')
        self.add_argument('-o', '--opt', nargs='*', default=[],
                          help='override config values: key=value or section.key=value')
        self.add_argument('--print-config', action='store_true',
                          help='print the fully merged config and exit')
        self.add_argument('--debug', action='store_true',
                          help='show the Python traceback of an error')


def load_cli_config(args, flags=None):
    """Load ``args.config``, apply ``flags`` (values from other CLI options), then ``-o``."""
    from ppdet.core.config import dump_config, load_config, merge_overrides
    cfg = load_config(args.config)
    if flags:
        merge_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    merge_overrides(cfg, args.opt)
    if getattr(args, 'print_config', False):
        print(dump_config(cfg), end='')
        sys.exit(0)
    return cfg


def run_main(main, argv=None):
    """Run ``main(argv)``; a toolkit error prints one line and exits non-zero."""
    argv = sys.argv[1:] if argv is None else argv
    debug = '--debug' in argv
    try:
        return main(argv)
    except PPDetError as err:
        if debug:
            traceback.print_exc()
        print(f'error: {err}', file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
