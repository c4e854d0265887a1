import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, '..', 'shared'))
REFERENCE = os.path.join(SHARED, 'reference')
PARITY = os.path.join(REFERENCE, 'parity')
SHARED_DATA = os.path.join(SHARED, 'data')

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


@pytest.fixture
def fresh_logger():
    """A script run in the test process sets the ``ppdet`` logger up on the stdout of the test
    that runs it first, which pytest closes after that test: each test using this fixture
    starts and ends without that handler."""
    logger = logging.getLogger('ppdet')

    def reset():
        logger.handlers.clear()
        logger._configured = False
    reset()
    yield
    reset()
