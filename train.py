"""Train a model: ``python train.py -c CONFIG [--eval] [-r CHECKPOINT] [--amp]``."""
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main


def parse_args(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('--eval', action='store_true', default=None,
                        help='evaluate after each snapshot and keep best_model')
    parser.add_argument('-r', '--resume', default=None,
                        help='checkpoint to continue from, e.g. output/<config name>/5')
    parser.add_argument('--amp', action='store_true', default=None,
                        help='mixed precision (GPU only; accepted and ignored on the CPU)')
    parser.add_argument('--amp_level', choices=['O1', 'O2'], default=None)
    parser.add_argument('--use_vdl', action='store_true', default=None,
                        help='log scalars for VisualDL (needs the visualdl package)')
    parser.add_argument('--vdl_log_dir', default=None)
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    cfg = load_cli_config(args, {'eval': args.eval, 'amp': args.amp, 'amp_level': args.amp_level,
                                 'use_vdl': args.use_vdl, 'vdl_log_dir': args.vdl_log_dir})
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode='train')
    if args.resume:
        trainer.resume(args.resume)
    elif cfg.get('pretrain_weights'):
        trainer.load_weights(cfg['pretrain_weights'], strict=False, what='pretrain_weights')
    trainer.train(validate=bool(cfg.get('eval')))
    return trainer


if __name__ == '__main__':
    run_main(main)
