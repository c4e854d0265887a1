"""The quick start in one command: train, evaluate and draw on the bundled dataset.

    python tools/quickstart.py [-o key=value ...]

Generates dataset/quickstart on first use, trains configs/quickstart.yml, evaluates the
final weights on the val split and draws predictions for a few val images.
"""
import glob
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import eval as eval_script    # noqa: E402
import infer as infer_script  # noqa: E402
import train as train_script  # noqa: E402
from ppdet.utils.cli import run_main  # noqa: E402

CONFIG = os.path.join('configs', 'quickstart.yml')
PICTURES = os.path.join('output', 'quickstart_pictures')


def main(argv):
    overrides = ['-o', *argv[argv.index('-o') + 1:]] if '-o' in argv else []
    start = time.time()
    train_script.main(['-c', CONFIG, *overrides])
    trained = time.time()
    results = eval_script.main(['-c', CONFIG, *overrides])
    images = sorted(glob.glob(os.path.join('dataset', 'quickstart', 'val', '*')))[:4]
    folder = os.path.join('output', 'quickstart_samples')
    os.makedirs(folder, exist_ok=True)
    for image in images:
        target = os.path.join(folder, os.path.basename(image))
        if not os.path.exists(target):
            os.symlink(os.path.abspath(image), target)
    infer_script.main(['-c', CONFIG, *overrides, '--infer_dir', folder,
                       '--output_dir', PICTURES, '--save_results'])
    print(f'\nquick start done in {time.time() - start:.0f} s (training {trained - start:.0f} s)')
    print(f'mask AP@[.5:.95] on the quick-start val split: {results.get("segm_AP", 0.):.3f}')
    print(f'pictures with predicted masks: {PICTURES}/')


if __name__ == '__main__':
    os.chdir(ROOT)
    run_main(main)
