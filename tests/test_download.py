"""Weights given by address, against a real HTTP server on 127.0.0.1 started here
(``fixtures/weights_server.py``)."""
import json
import os
import socket
import sys

import numpy as np
import paddle
import pytest

import eval as eval_script
import infer as infer_script
from ppdet.core.errors import CheckpointError, WeightsError
from ppdet.utils import download
from ppdet.utils.checkpoint import load_checkpoint, load_weights
from ppdet.utils.cli import run_main

from conftest import PARITY, REFERENCE, ROOT, needs_shared
from fixtures.weights_server import weights_file

pytestmark = pytest.mark.usefixtures('fresh_logger')

NORMALIZE = '{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh weights cache for this test; no waiting between attempts; rank 0."""
    folder = tmp_path / 'cache'
    monkeypatch.setenv(download.CACHE_ENV, str(folder))
    monkeypatch.setattr(download, 'RETRY_WAIT', 0.)
    for var in ('PADDLE_LOCAL_RANK', 'PADDLE_RANK_IN_NODE', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    return folder


def unused_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def small_layer(seed):
    paddle.seed(seed)
    return paddle.nn.Linear(300, 200)


def serve_small(server, tmp_path, name='small.pdparams', seed=1):
    layer = small_layer(seed)
    server.files[name] = weights_file(layer, tmp_path / f'served_{name}')
    return layer, server.url(name)


def assert_same_weights(a, b):
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), b.state_dict()[key].numpy())


@needs_shared
def test_published_format_weights_by_address_predict_like_the_same_file_by_path(
        tmp_path, weights_server, cache):
    sys.path.insert(0, PARITY)
    import seeded_weights
    table = os.path.join(REFERENCE, 'params', 'solov2_r50_fpn_1x_coco.tsv')
    file = tmp_path / 'solov2_r50_fpn_1x_coco.pdparams'
    seeded_weights.save_pdparams(seeded_weights.generate_all(seeded_weights._read_names(table)),
                                 str(file))
    weights_server.files[file.name] = file.read_bytes()
    resize = '{interp: 1, target_size: [320, 533], keep_ratio: true}'
    test_ops = (f'[{{Decode: {{}}}}, {{NormalizeImage: {NORMALIZE}}}, {{Resize: {resize}}}, '
                f'{{Permute: {{}}}}]')

    def predict(weights, out):
        run_main(infer_script.main, [
            '-c', os.path.join(ROOT, 'configs/solov2/solov2_r50_fpn_1x_coco.yml'),
            '-w', weights, '--infer_img', os.path.join(PARITY, '000000014439.jpg'),
            '--output_dir', str(out), '--save_results', '--visualize', 'false',
            '--engine', 'eager',      # the weights, not an export of them, are under test
            '-o', f'TestReader.sample_transforms={test_ops}'])
        return json.loads((out / 'segm.json').read_text())

    by_path = predict(str(file), tmp_path / 'by_path')
    by_address = predict(weights_server.url(file.name), tmp_path / 'by_address')
    assert len(by_path) > 10
    assert by_address == by_path
    assert (cache / file.name).read_bytes() == weights_server.files[file.name]
    assert len(weights_server.gets(file.name)) == 1


def test_a_second_run_does_not_download_and_the_cache_folder_is_honoured(
        tmp_path, weights_server, cache, monkeypatch):
    layer, url = serve_small(weights_server, tmp_path)
    monkeypatch.delenv(download.CACHE_ENV)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    paddledet_cache = tmp_path / 'home' / '.cache' / 'paddle' / 'weights'
    for _ in range(2):
        model = small_layer(seed=2)
        load_weights(model, url)
        assert_same_weights(model, layer)
    assert len(weights_server.gets('small.pdparams')) == 1
    assert os.listdir(paddledet_cache) == ['small.pdparams']

    # a file PaddleDetection fetched earlier is used as it is: no request at all
    (paddledet_cache / 'fetched.pdparams').write_bytes(weights_server.files['small.pdparams'])
    load_weights(small_layer(seed=2), weights_server.url('fetched.pdparams'))
    assert not weights_server.gets('fetched.pdparams')

    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / 'elsewhere'))
    load_weights(small_layer(seed=2), url)
    assert os.listdir(tmp_path / 'elsewhere') == ['small.pdparams']
    assert len(weights_server.gets('small.pdparams')) == 2


def test_a_dropped_connection_is_resumed_where_it_stopped(tmp_path, weights_server, cache):
    layer, url = serve_small(weights_server, tmp_path)
    size = len(weights_server.files['small.pdparams'])
    weights_server.drop = 1
    model = small_layer(seed=2)
    load_weights(model, url)
    assert_same_weights(model, layer)
    assert weights_server.requests[0][1] is None
    assert weights_server.requests[1][1] == f'bytes={size // 2}-'
    assert os.listdir(cache) == ['small.pdparams']


def test_an_interrupted_download_leaves_no_file_and_the_next_run_completes(
        tmp_path, weights_server, cache):
    layer, url = serve_small(weights_server, tmp_path)
    weights_server.drop = download.RETRIES
    with pytest.raises(WeightsError) as err:
        load_weights(small_layer(seed=2), url)
    message = str(err.value)
    assert message.startswith(f'{url}: download failed after {download.RETRIES} attempts')
    assert 'the next run resumes' in message
    assert message.endswith(f'pass -w PATH (or put it at {cache / "small.pdparams"})')
    assert not (cache / 'small.pdparams').exists()
    assert [p.name for p in cache.iterdir()] == ['.small.pdparams.part']

    weights_server.ranges = False          # this server cannot resume: the download starts again
    model = small_layer(seed=2)
    load_weights(model, url)
    assert_same_weights(model, layer)
    assert os.listdir(cache) == ['small.pdparams']


def test_an_html_page_never_lands_in_the_cache(tmp_path, weights_server, cache):
    _, url = serve_small(weights_server, tmp_path)
    weights_server.html = True
    with pytest.raises(WeightsError, match=r'not a weights file \(text/html\)'):
        load_weights(small_layer(seed=2), url, strict=False, what='pretrain_weights')
    assert os.listdir(cache) == []


@pytest.mark.parametrize('case', ['404', 'unreachable'])
def test_a_missing_file_or_an_unreachable_server_is_one_line(case, weights_server, cache,
                                                             capsys):
    if case == '404':
        url = weights_server.url('missing.pdparams')
        problem = 'the server answered HTTP 404 Not Found'
    else:
        url = f'http://127.0.0.1:{unused_port()}/models/missing.pdparams'
        problem = f'download failed after {download.RETRIES} attempts (ConnectionRefusedError'
    with pytest.raises(SystemExit) as exit_info:
        run_main(eval_script.main, ['-c', os.path.join(ROOT, 'configs/quickstart.yml'),
                                    '-w', url])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert err.strip().splitlines()[-1].startswith(f'error: {url}: {problem}')
    assert err.strip().endswith(f'download the file yourself and pass -w PATH (or put it at '
                                f'{cache / "missing.pdparams"})')


def test_resume_takes_only_a_checkpoint_on_disk():
    with pytest.raises(CheckpointError, match='-r resumes from a checkpoint on disk'):
        load_checkpoint('https://paddledet.bj.bcebos.com/models/solov2_r50_fpn_1x_coco')
