"""Convert an exported model folder to ONNX: writes ``model.onnx`` next to ``model.json``.

    python tools/export_onnx.py --model_dir output_inference/quickstart [--opset 16]

Needs the ``export`` extras (``pip install -r requirements-export.txt``). The ONNX graph holds
the whole post-processing with standard operators only; run it with
``deploy/python/infer.py --backend onnx``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.core.errors import ConfigError  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', required=True, help='folder written by export_model.py')
    parser.add_argument('--opset', type=int, default=16)
    parser.add_argument('--debug', action='store_true')
    args = parser.parse_args(argv)
    from ppdet.engine.export import MODEL_FILE, export_onnx
    if not os.path.isfile(os.path.join(args.model_dir, MODEL_FILE)):
        raise ConfigError(f'{args.model_dir}: no {MODEL_FILE} here (run tools/export_model.py)')
    print(f'written {export_onnx(args.model_dir, opset=args.opset)}')


if __name__ == '__main__':
    run_main(main)
