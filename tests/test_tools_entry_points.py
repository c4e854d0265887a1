"""``python tools/train.py`` and its three siblings, PaddleDetection's entry points, take the
top-level scripts' flags and run from the repository root or from any other folder."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def run(args, cwd):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f'{args[:3]}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def test_tools_scripts_train_evaluate_infer_and_export(tmp_path, quickstart_data):
    data = quickstart_data
    opts = ['-o', 'worker_num=0', f'save_dir={tmp_path / "out"}', 'inference_engine=eager',
            'SOLOv2Head.score_threshold=0.0', 'MaskMatrixNMS.update_threshold=0.0',
            *(f'{s}.dataset_dir={data}' for s in ('TrainDataset', 'EvalDataset', 'TestDataset'))]
    log = run(['tools/train.py', '-c', 'configs/quickstart.yml', *opts, 'max_iters=2'], ROOT)
    assert 'Epoch: [0] [   0/2]' in log
    # paddle's start-up notices are not shown
    assert 'No ccache found' not in log and 'always track global mean' not in log
    weights = str(tmp_path / 'out' / 'quickstart' / 'model_final')

    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    tools, config = os.path.join(ROOT, 'tools'), os.path.join(ROOT, 'configs', 'quickstart.yml')
    log = run([f'{tools}/eval.py', '-c', config, '-w', weights, '--output_eval', 'results',
               *opts], elsewhere)
    assert 'segm AP (COCO' in log
    assert isinstance(json.loads((elsewhere / 'results' / 'segm.json').read_text()), list)

    image = sorted((data / 'val').iterdir())[0]
    run([f'{tools}/infer.py', '-c', config, '-w', weights, '--infer_img', str(image),
         '--output_dir', 'drawn', '--draw_threshold', '0.3', *opts], elsewhere)
    assert os.listdir(elsewhere / 'drawn') == [image.name]

    log = run([f'{tools}/export_model.py', '-c', config, '-w', weights, '--output_dir',
               'inference', *opts], elsewhere)
    assert "'place' interface" not in log        # paddle's notice while tracing the program
    assert sorted(os.listdir(elsewhere / 'inference' / 'quickstart')) == [
        'infer_cfg.yml', 'model.json', 'model.pdiparams']
