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
