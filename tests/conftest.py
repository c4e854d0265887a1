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


def import_deploy_predictor():
    """``deploy/python/infer.py`` as module ``deploy_infer`` (the name ``infer`` is the
    training-side script's)."""
    import importlib.util
    folder = os.path.join(ROOT, 'deploy', 'python')
    if folder not in sys.path:
        sys.path.append(folder)        # for its sibling modules (preprocess, visualize)
    if 'deploy_infer' not in sys.modules:
        spec = importlib.util.spec_from_file_location('deploy_infer',
                                                      os.path.join(folder, 'infer.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules['deploy_infer'] = module
        spec.loader.exec_module(module)
    return sys.modules['deploy_infer']


# ---------------------------------------------------------------------------- the tree

# What Python and pytest themselves leave in the repository; anything else a test wrote
# there (a generated dataset, an output/ folder) fails the run.
OWN_LEFTOVERS = {'.git', '.scratch', '.venv', '__pycache__', '.pytest_cache', '.hypothesis'}


def _tree_state():
    state = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in OWN_LEFTOVERS and not d.endswith('.egg-info')]
        for name in files:
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


@pytest.fixture()
def ppdet_log():
    """The records logged on the ``ppdet`` logger meanwhile (the scripts' logger does not
    propagate to pytest's capture once set up)."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger('ppdet')
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


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
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    with fresh_ppdet_logger():
        logging.getLogger('ppdet').addHandler(handler)
        run_main(train.main, ['-c', config, '--eval', '--amp', '--use_vdl', '--vdl_log_dir',
                              str(folder / 'vdl'), '-o', 'use_ema=true', 'ema_decay=0.9'])
    return TrainedRun(config, folder / 'out' / 'tiny', Path(quickstart_data), folder / 'vdl',
                      tuple(r.getMessage() for r in records))
