import contextlib
import logging
import os
import sys
from pathlib import Path

import pytest

from fixtures import PARITY, REFERENCE, ROOT, SHARED, SHARED_DATA  # noqa: F401  (re-exported)

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason='../shared is not present')

# Fuzz tests (hypothesis): the default profile is derandomised (the same examples on every
# run, no example database) with a budget that keeps all fuzz tests within a couple of
# minutes on a 2-core CI machine.  `HYPOTHESIS_PROFILE=thorough` searches much longer.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile('ci', derandomize=True, database=None, max_examples=100,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('thorough', max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))


def import_script(path, name):
    """The script at ``path`` as module ``name`` (a name of its own: the tools and the deploy
    predictor share file names with the top-level scripts)."""
    import importlib.util
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def import_deploy_predictor():
    """``deploy/python/infer.py`` as module ``deploy_infer``."""
    folder = os.path.join(ROOT, 'deploy', 'python')
    if folder not in sys.path:
        sys.path.append(folder)        # for its sibling modules (preprocess, visualize)
    return import_script(os.path.join(folder, 'infer.py'), 'deploy_infer')


# ---------------------------------------------------------------------------- the tree

# What Python and pytest themselves leave in the repository (and pytest-cov's data files);
# anything else a test wrote there (a generated dataset, an output/ folder) fails the run.
OWN_LEFTOVERS = {'.git', '.scratch', '.venv', '__pycache__', '.pytest_cache', '.hypothesis'}


def _tree_state():
    state = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in OWN_LEFTOVERS and not d.endswith('.egg-info')]
        for name in (f for f in files if not f.startswith('.coverage')):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                state[os.path.relpath(path, ROOT)] = os.stat(path).st_mtime_ns
    return state


@pytest.fixture(scope='session', autouse=True)
def repository_tree_untouched():
    """No test writes into the repository: every run works in pytest's temporary folders."""
    before = _tree_state()
    yield
    after = _tree_state()
    changed = sorted(p for p in after if before.get(p) != after[p])
    assert not changed, f'tests wrote into the repository: {changed[:10]}'


# ---------------------------------------------------------------------------- logging

@contextlib.contextmanager
def fresh_ppdet_logger():
    """A script run in the test process sets the ``ppdet`` logger up on the ``sys.stdout``
    of that moment, which pytest may close afterwards: the block starts and ends without
    that handler."""
    logger = logging.getLogger('ppdet')

    def reset():
        logger.handlers.clear()
        logger._configured = False
    reset()
    try:
        yield
    finally:
        reset()


@pytest.fixture
def fresh_logger():
    with fresh_ppdet_logger():
        yield


@contextlib.contextmanager
def ppdet_records():
    """The records the ``ppdet`` logger emits meanwhile, INFO and above, whatever handlers it
    has (a script's handler does not propagate to pytest's capture). A logger that no script
    set up meanwhile gets its level back."""
    logger = logging.getLogger('ppdet')
    records, level = [], logger.level
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        if not getattr(logger, '_configured', False):
            logger.setLevel(level)


@pytest.fixture()
def ppdet_log():
    with ppdet_records() as records:
        yield records


# ---------------------------------------------------------------------------- artefacts

@pytest.fixture
def weights_server():
    """An HTTP server on 127.0.0.1 for this test (``fixtures/weights_server.py``)."""
    from fixtures.weights_server import WeightsServer
    server = WeightsServer()
    yield server
    server.close()


@pytest.fixture(scope='session')
def quickstart_data(tmp_path_factory):
    """A quick-start dataset of 8 training and 4 validation images, generated once."""
    from ppdet.data import generate_quickstart
    folder = tmp_path_factory.mktemp('quickstart_data') / 'quickstart'
    generate_quickstart(str(folder), num_train=8, num_val=4)
    return folder


@pytest.fixture(scope='session')
def trained_quickstart(quickstart_data, tmp_path_factory):
    """The tiny quick-start run (``fixtures/quickstart_run.py``) trained once by ``train.py``
    in this process: two epochs of two steps, with ``--eval``, EMA, ``--use_vdl`` and
    ``--amp`` (a warning on the CPU). Tests read its files and never write into its folder."""
    import train
    from fixtures.quickstart_run import TrainedRun, write_config
    from ppdet.utils.cli import run_main
    folder = tmp_path_factory.mktemp('trained_quickstart')
    config = write_config(folder, quickstart_data)
    with fresh_ppdet_logger(), ppdet_records() as records:
        run_main(train.main, ['-c', config, '--eval', '--amp', '--use_vdl', '--vdl_log_dir',
                              str(folder / 'vdl'), '-o', 'use_ema=true', 'ema_decay=0.9'])
    return TrainedRun(config, folder / 'out' / 'tiny', Path(quickstart_data), folder / 'vdl',
                      tuple(r.getMessage() for r in records))


@pytest.fixture(scope='session')
def exported(tmp_path_factory):
    """The seeded quick-start model (``fixtures/seeded_quickstart.py``) exported once, ONNX
    included: (export folder, eager results per image, the images, packages installed or
    changed while exporting)."""
    pytest.importorskip('paddle2onnx')
    import paddle
    import yaml
    from fixtures.seeded_quickstart import build_quickstart, installed_packages, \
        synthetic_images
    from ppdet.engine.export import export_model
    predictor = import_deploy_predictor()
    from preprocess import Preprocessor, collate
    cfg, model = build_quickstart()
    out = str(tmp_path_factory.mktemp('export') / 'quickstart')
    before = installed_packages()
    export_model(model, cfg, out, onnx=True)
    installed_during_export = set(installed_packages().items()) - set(before.items())
    with open(os.path.join(out, 'infer_cfg.yml')) as f:
        preprocess = Preprocessor(yaml.safe_load(f)['Preprocess'])
    images = synthetic_images()
    samples = [preprocess(image) for image in images]
    feeds = collate(samples)
    with paddle.no_grad():
        eager = model.predict(*(paddle.to_tensor(feeds[k])
                                for k in ('image', 'im_shape', 'scale_factor')))
    eager = predictor.split_batch({k: v.numpy() for k, v in eager.items()},
                                  [info['orig_hw'] for _, info in samples])
    return out, eager, images, installed_during_export


@pytest.fixture(scope='session')
def exported_quickstart(trained_quickstart, tmp_path_factory):
    """``trained_quickstart``'s final weights exported by ``tools/export_model.py`` (in this
    process): the folder with ``model.json``, ``model.pdiparams`` and ``infer_cfg.yml``."""
    export_script = import_script(os.path.join(ROOT, 'tools', 'export_model.py'),
                                  'tools_export_model')
    folder = tmp_path_factory.mktemp('exported_quickstart')
    with fresh_ppdet_logger():
        export_script.main(['-c', trained_quickstart.config, '-w', trained_quickstart.weights(),
                            '--output_dir', str(folder)])
    return folder / 'tiny'
