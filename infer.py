"""Predict and draw: ``python infer.py -c CONFIG [-w WEIGHTS] --infer_img IMG | --infer_dir DIR``.

Drawn images go to ``--output_dir`` under their file names; ``--save_results`` also writes
``segm.json`` / ``bbox.json`` (COCO results, masks as RLE).  Only instances scoring at
least ``--draw_threshold`` are drawn; the model's own thresholds (``SOLOv2Head.score_threshold``
before Matrix NMS, ``MaskMatrixNMS.update_threshold`` after it) are set with ``-o``.
"""
import os

from ppdet.core.errors import ConfigError
from ppdet.data.source.image_folder import IMAGE_EXTENSIONS, list_images
from ppdet.utils.cli import ArgsParser, load_cli_config, run_main


def parse_bool(text):
    value = str(text).strip().lower()
    if value not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise ConfigError(f'expected true or false, got {text!r}')
    return value in ('true', '1', 'yes')


def parse_args(argv):
    parser = ArgsParser(description=__doc__)
    parser.add_argument('-w', '--weights', default=None, help='weights to run')
    parser.add_argument('--infer_img', default=None, help='one image (wins over --infer_dir)')
    parser.add_argument('--infer_dir', default=None, help='a folder of images (not recursive)')
    parser.add_argument('--output_dir', default='output', help='where drawings and json go')
    parser.add_argument('--draw_threshold', type=float, default=0.5,
                        help='draw instances scoring at least this')
    parser.add_argument('--save_results', nargs='?', const='true', default='false',
                        help='also write segm.json / bbox.json (true/false)')
    parser.add_argument('--visualize', nargs='?', const='true', default='true',
                        help='write the drawn images (true/false)')
    parser.add_argument('--amp', action='store_true', default=None)
    return parser.parse_args(argv)


def collect_images(infer_img, infer_dir):
    """The image files to run on, sorted so that each run numbers them the same way."""
    if infer_img:
        if not os.path.isfile(infer_img):
            raise ConfigError(f'{infer_img}: --infer_img does not exist')
        if not infer_img.lower().endswith(IMAGE_EXTENSIONS):
            raise ConfigError(f'{infer_img}: --infer_img is not an image '
                              f'({", ".join(IMAGE_EXTENSIONS)})')
        return [infer_img]
    if not infer_dir:
        raise ConfigError('infer.py needs --infer_img or --infer_dir')
    if not os.path.isdir(infer_dir):
        raise ConfigError(f'{infer_dir}: --infer_dir is not a folder')
    return list_images(infer_dir)


def main(argv):
    args = parse_args(argv)
    cfg = load_cli_config(args, {'weights': args.weights, 'amp': args.amp,
                                 'draw_threshold': args.draw_threshold})
    images = collect_images(args.infer_img, args.infer_dir)
    from ppdet.engine import Trainer
    trainer = Trainer(cfg, mode='test')
    trainer.load_weights(cfg.get('weights'))
    trainer.predict(images, output_dir=args.output_dir,
                    draw_threshold=float(cfg.get('draw_threshold', 0.5)),
                    save_results=parse_bool(args.save_results),
                    visualize=parse_bool(args.visualize))


if __name__ == '__main__':
    run_main(main)
