"""Export a model for deployment: ``model.json`` + ``model.pdiparams`` + ``infer_cfg.yml``.

    python tools/export_model.py -c configs/quickstart.yml -o weights=output/quickstart/model_final
    python tools/export_model.py -c CFG -w WEIGHTS --output_dir output_inference --onnx

The files go to ``<output_dir>/<config name>/``; ``deploy/python/infer.py --model_dir`` runs
them. ``--onnx`` also writes ``model.onnx`` (needs the ``export`` extras: paddle2onnx).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.cli import ArgsParser, load_cli_config, run_main  # noqa: E402


def parse_args(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('-w', '--weights', default=None,
                        help='weights to export (default: the config\'s "weights")')
    parser.add_argument('--output_dir', default='output_inference')
    parser.add_argument('--onnx', action='store_true', help='also convert to model.onnx')
    parser.add_argument('--opset', type=int, default=16, help='ONNX opset (with --onnx)')
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    cfg = load_cli_config(args, {'weights': args.weights})
    import paddle
    paddle.set_device('cpu')
    import ppdet.modeling  # noqa: F401  (registers the model components)
    from ppdet.core.workspace import create
    from ppdet.engine.export import export_model
    from ppdet.utils.checkpoint import load_weights
    model = create(cfg.architecture, cfg)
    load_weights(model, cfg.weights)
    name = os.path.splitext(os.path.basename(args.config))[0]
    out = export_model(model, cfg, os.path.join(args.output_dir, name), onnx=args.onnx,
                       opset=args.opset)
    print(f'exported to {out}: {", ".join(sorted(os.listdir(out)))}')


if __name__ == '__main__':
    run_main(main)
