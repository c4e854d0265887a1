"""Weights given by address, against a real HTTP server on 127.0.0.1 started here.

The server serves byte ranges (or ignores them), can stop half-way through a body, answer
every request with an HTML page, or answer slowly, and records every request.
"""
import contextlib
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import paddle
import pytest

import eval as eval_script
import infer as infer_script
import train as train_script
from ppdet.core.errors import CheckpointError, WeightsError
from ppdet.modeling.backbones.resnet import ResNet
from ppdet.utils import download
from ppdet.utils.checkpoint import load_checkpoint, load_weights
from ppdet.utils.cli import run_main

from conftest import PARITY, REFERENCE, ROOT, SHARED_DATA, needs_shared

pytestmark = pytest.mark.usefixtures('fresh_logger')

NORMALIZE = '{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'


class WeightsServer:
    """``files`` (name -> bytes) over HTTP on 127.0.0.1, from a thread."""

    def __init__(self):
        self.files = {}
        self.requests = []       # (path, Range header or None) of every GET
        self.ranges = True       # answer Range requests with 206
        self.drop = 0            # the next `drop` bodies stop half-way and the connection closes
        self.html = False        # answer everything with 200 and an HTML page
        self.delay = 0.          # seconds between 64 KiB chunks
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.httpd.state = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/models/{name}'

    def gets(self, name):
        return [r for r in self.requests if r[0].endswith('/' + name)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get('Range')))
        if state.html:
            return self._answer(200, b'<html><body>Please log in</body></html>',
                                {'Content-Type': 'text/html'})
        data = state.files.get(self.path.rsplit('/', 1)[-1])
        if data is None:
            return self.send_error(404)
        headers, start = {'Content-Type': 'application/octet-stream'}, 0
        wanted = self.headers.get('Range')
        if wanted and state.ranges:
            start = int(wanted.split('=')[1].split('-')[0])
            headers['Content-Range'] = f'bytes {start}-{len(data) - 1}/{len(data)}'
        self._answer(206 if start else 200, data[start:], headers)

    def _answer(self, status, body, headers):
        state = self.server.state
        self.send_response(status)
        for key, value in {**headers, 'Content-Length': str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if state.drop:
            state.drop -= 1
            body = body[:len(body) // 2]
        for i in range(0, len(body), 1 << 16):
            self.wfile.write(body[i:i + (1 << 16)])
            time.sleep(state.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = WeightsServer()
    yield srv
    srv.close()


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


def weights_file(layer, path):
    """``layer``'s state dict written as the published files are (``paddle.save``)."""
    paddle.save(layer.state_dict(), str(path))
    return path.read_bytes()


def small_layer(seed):
    paddle.seed(seed)
    return paddle.nn.Linear(300, 200)


def serve_small(server, tmp_path, name='small.pdparams', seed=1):
    layer = small_layer(seed)
    server.files[name] = weights_file(layer, tmp_path / f'served_{name}')
    return layer, server.url(name)


@contextlib.contextmanager
def logged_messages():
    """The messages of the ``ppdet`` logger while the block runs."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger('ppdet')
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def assert_same_weights(a, b):
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), b.state_dict()[key].numpy())


def test_published_format_weights_by_address_predict_like_the_same_file_by_path(
        tmp_path, server, cache):
    sys.path.insert(0, PARITY)
    import seeded_weights
    table = os.path.join(REFERENCE, 'params', 'solov2_r50_fpn_1x_coco.tsv')
    file = tmp_path / 'solov2_r50_fpn_1x_coco.pdparams'
    seeded_weights.save_pdparams(seeded_weights.generate_all(seeded_weights._read_names(table)),
                                 str(file))
    server.files[file.name] = file.read_bytes()
    resize = '{interp: 1, target_size: [320, 533], keep_ratio: true}'
    test_ops = (f'[{{Decode: {{}}}}, {{NormalizeImage: {NORMALIZE}}}, {{Resize: {resize}}}, '
                f'{{Permute: {{}}}}]')

    def predict(weights, out):
        run_main(infer_script.main, [
            '-c', os.path.join(ROOT, 'configs/solov2/solov2_r50_fpn_1x_coco.yml'),
            '-w', weights, '--infer_img', os.path.join(PARITY, '000000014439.jpg'),
            '--output_dir', str(out), '--save_results', '--visualize', 'false',
            '-o', f'TestReader.sample_transforms={test_ops}'])
        return json.loads((out / 'segm.json').read_text())

    by_path = predict(str(file), tmp_path / 'by_path')
    by_address = predict(server.url(file.name), tmp_path / 'by_address')
    assert len(by_path) > 10
    assert by_address == by_path
    assert (cache / file.name).read_bytes() == server.files[file.name]
    assert len(server.gets(file.name)) == 1


def test_a_second_run_does_not_download_and_the_cache_folder_is_honoured(
        tmp_path, server, cache, monkeypatch):
    layer, url = serve_small(server, tmp_path)
    monkeypatch.delenv(download.CACHE_ENV)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    paddledet_cache = tmp_path / 'home' / '.cache' / 'paddle' / 'weights'
    for _ in range(2):
        model = small_layer(seed=2)
        load_weights(model, url)
        assert_same_weights(model, layer)
    assert len(server.gets('small.pdparams')) == 1
    assert os.listdir(paddledet_cache) == ['small.pdparams']

    # a file PaddleDetection fetched earlier is used as it is: no request at all
    (paddledet_cache / 'fetched.pdparams').write_bytes(server.files['small.pdparams'])
    load_weights(small_layer(seed=2), server.url('fetched.pdparams'))
    assert not server.gets('fetched.pdparams')

    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / 'elsewhere'))
    load_weights(small_layer(seed=2), url)
    assert os.listdir(tmp_path / 'elsewhere') == ['small.pdparams']
    assert len(server.gets('small.pdparams')) == 2


def test_a_dropped_connection_is_resumed_where_it_stopped(tmp_path, server, cache):
    layer, url = serve_small(server, tmp_path)
    size = len(server.files['small.pdparams'])
    server.drop = 1
    model = small_layer(seed=2)
    load_weights(model, url)
    assert_same_weights(model, layer)
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f'bytes={size // 2}-'
    assert os.listdir(cache) == ['small.pdparams']


def test_an_interrupted_download_leaves_no_file_and_the_next_run_completes(
        tmp_path, server, cache):
    layer, url = serve_small(server, tmp_path)
    server.drop = download.RETRIES
    with pytest.raises(WeightsError) as err:
        load_weights(small_layer(seed=2), url)
    message = str(err.value)
    assert message.startswith(f'{url}: download failed after {download.RETRIES} attempts')
    assert 'the next run resumes' in message
    assert message.endswith(f'pass -w PATH (or put it at {cache / "small.pdparams"})')
    assert not (cache / 'small.pdparams').exists()
    assert [p.name for p in cache.iterdir()] == ['.small.pdparams.part']

    server.ranges = False          # this server cannot resume: the download starts again
    model = small_layer(seed=2)
    load_weights(model, url)
    assert_same_weights(model, layer)
    assert os.listdir(cache) == ['small.pdparams']


def test_an_html_page_never_lands_in_the_cache(tmp_path, server, cache):
    _, url = serve_small(server, tmp_path)
    server.html = True
    with pytest.raises(WeightsError, match=r'not a weights file \(text/html\)'):
        load_weights(small_layer(seed=2), url, strict=False, what='pretrain_weights')
    assert os.listdir(cache) == []


@pytest.mark.parametrize('case', ['404', 'unreachable'])
def test_a_missing_file_or_an_unreachable_server_is_one_line(case, server, cache, capsys):
    if case == '404':
        url, problem = server.url('missing.pdparams'), 'the server answered HTTP 404 Not Found'
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


def test_two_process_launch_downloads_once(tmp_path, server):
    from ppdet.data import generate_quickstart
    generate_quickstart(os.path.join(ROOT, 'dataset', 'quickstart'))
    # the backbone of configs/quickstart.yml
    backbone = ResNet(depth=18, num_stages=3, return_idx=[0, 1, 2], freeze_at=-1,
                      freeze_norm=False)
    server.files['ResNet18_pretrained.pdparams'] = weights_file(backbone, tmp_path / 'r18.pdparams')
    server.delay = 0.01            # about 7 s: the second rank starts while the first downloads
    env = {k: v for k, v in os.environ.items()
           if k not in ('PADDLE_LOCAL_RANK', 'PADDLE_RANK_IN_NODE', 'LOCAL_RANK')}
    env[download.CACHE_ENV] = str(tmp_path / 'cache')
    proc = subprocess.run(
        [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', '2',
         '--log_dir', str(tmp_path / 'log'), 'train.py', '-c', 'configs/quickstart.yml',
         '-o', f'pretrain_weights={server.url("ResNet18_pretrained.pdparams")}',
         f'save_dir={tmp_path / "out"}', 'max_iters=1', 'worker_num=0',
         'TrainDataset.sample_num=16'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = ''.join(p.read_text() for p in sorted((tmp_path / 'log').glob('workerlog.*')))
    assert proc.returncode == 0, logs[-3000:]
    assert len(server.requests) == 1
    assert f'ResNet18_pretrained.pdparams: loaded {len(backbone.state_dict())} tensors' in logs
    assert os.listdir(tmp_path / 'cache') == ['ResNet18_pretrained.pdparams']


@needs_shared
def test_enhance_config_with_amp_trains_from_the_backbone_in_the_cache(
        tmp_path, cache, monkeypatch):
    backbone = ResNet(depth=50, variant='d', freeze_at=0, freeze_norm=False,
                      dcn_v2_stages=[1, 2, 3], lr_mult_list=[0.05, 0.05, 0.1, 0.15])
    cache.mkdir()
    file = cache / 'ResNet50_vd_ssld_v2_pretrained.pdparams'
    weights_file(backbone, file)

    def no_download(*args):
        raise AssertionError('the cached backbone was not used')
    monkeypatch.setattr(download, '_download', no_download)
    data = os.path.join(SHARED_DATA, 'coco_person60')
    small = '{interp: 1, target_size: [128, 128], keep_ratio: true}'
    train_ops = (f'[{{Decode: {{}}}}, {{Poly2Mask: {{}}}}, {{Resize: {small}}}, '
                 f'{{NormalizeImage: {NORMALIZE}}}, {{Permute: {{}}}}]')
    with logged_messages() as messages:
        trainer = run_main(train_script.main, [
            '-c', os.path.join(ROOT, 'configs/solov2_r50_enhance_coco.yml'), '--amp', '-o',
            f'save_dir={tmp_path / "out"}', 'max_iters=1', 'worker_num=0', 'num_classes=1',
            f'TrainDataset.dataset_dir={data}', 'TrainDataset.image_dir=images/train2017',
            'TrainDataset.anno_path=annotations/person_keypoints_train2017.json',
            'TrainDataset.sample_num=2', 'TrainReader.batch_size=1',
            f'TrainReader.sample_transforms={train_ops}'])
    loaded = f'{file}: loaded {len(backbone.state_dict())} tensors\n'
    assert any(m.startswith(loaded) for m in messages), messages
    assert trainer.plan.total_steps == 1
    assert (tmp_path / 'out' / 'solov2_r50_enhance_coco' / 'model_final.pdparams').is_file()
