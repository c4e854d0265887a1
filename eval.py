"""Evaluate a model: ``python eval.py -c CONFIG [-w WEIGHTS] [--output_eval DIR] [--classwise]``.

Without ``-w`` the config's ``weights`` key is used (``output/<config name>/model_final``).
``--json_eval`` scores the ``segm.json`` / ``bbox.json`` in ``--output_eval`` without a model.
"""
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main


def parse_args(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('-w', '--weights', default=None, help='weights to evaluate')
    parser.add_argument('--output_eval', default=None,
                        help='folder for segm.json / bbox.json (COCO results format)')
    parser.add_argument('--classwise', action='store_true', default=None,
                        help='print the AP of each category')
    parser.add_argument('--json_eval', action='store_true',
                        help='evaluate the json files in --output_eval instead of running a model')
    parser.add_argument('--amp', action='store_true', default=None)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    cfg = load_cli_config(args, {'weights': args.weights, 'classwise': args.classwise,
                                 'output_eval': args.output_eval, 'amp': args.amp})
    from ppdet.utils.logger import setup_logger
    setup_logger()
    if args.json_eval:
        from ppdet.engine.evaluation import eval_anno_file
        from ppdet.metrics import evaluate_json
        return evaluate_json(cfg.get('output_eval') or '.', eval_anno_file(cfg),
                             bool(cfg.get('classwise')))
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode='eval')
    trainer.load_weights(cfg.get('weights'))
    return trainer.evaluate(output_eval=cfg.get('output_eval'),
                            classwise=bool(cfg.get('classwise')))


if __name__ == '__main__':
    run_main(main)
