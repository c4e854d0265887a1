"""A process SIGKILLed while it writes checkpoints never leaves a broken one behind."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ppdet.utils.fileio import TEMP_SUFFIX, load_file, save_file

from conftest import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')

SIZE = 4 * 1024 * 1024  # float32 values per array: 2 arrays, 32 MB per checkpoint

# Resumes from the checkpoint if there is one, then writes version after version, each one
# recognisable from its values; prints a line before and after each write.
WRITER = textwrap.dedent(f"""
    import os, sys
    import numpy as np
    sys.path.insert(0, {ROOT!r})
    import paddle
    from ppdet.utils.fileio import load_file, save_file

    path = sys.argv[1]
    version = load_file(path)['version'] + 1 if os.path.exists(path) else 0
    while True:
        print('start', version, flush=True)
        values = np.arange({SIZE}, dtype=np.float32) + version
        optimizer = {{'velocity': values * 2, 'LR_Scheduler': {{'last_epoch': version}}}}
        save_file({{'version': version, 'weights': paddle.to_tensor(values),
                   'optimizer': optimizer}}, path)
        print('done', version, flush=True)
        version += 1
""")


def assert_is_complete_version(state):
    values = np.arange(SIZE, dtype=np.float32) + state['version']
    np.testing.assert_array_equal(state['weights'], values)
    np.testing.assert_array_equal(state['optimizer']['velocity'], values * 2)
    assert state['optimizer']['LR_Scheduler'] == {'last_epoch': state['version']}


def temp_files(path):
    folder = os.path.dirname(path)
    return [name for name in os.listdir(folder) if name.endswith(TEMP_SUFFIX)]


def run_and_kill(path, rng):
    """Start the writer, SIGKILL it at a random moment of a write; its output lines."""
    writer = subprocess.Popen([sys.executable, '-c', WRITER, path], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    lines = []
    try:
        while len(lines) < rng.choice([1, 3, 5]):  # the 1st, 2nd or 3rd write
            line = writer.stdout.readline()
            assert line, 'the writer stopped by itself'
            lines.append(line.split())
        deadline = time.monotonic() + 5
        while not temp_files(path) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.15))
    finally:
        writer.send_signal(signal.SIGKILL)
        lines += [line.split() for line in writer.stdout.read().splitlines()]
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    return lines


def test_checkpoint_survives_sigkill_during_writes(tmp_path):
    rng = random.Random(20261126)
    path = str(tmp_path / 'model_final.pdparams')
    on_disk, killed_mid_write = None, 0
    for _ in range(4):
        lines = run_and_kill(path, rng)
        started = [int(v) for event, v in lines if event == 'start']
        done = [int(v) for event, v in lines if event == 'done']
        # the last finished version, or the one being written if its rename happened
        candidates = {done[-1] if done else on_disk, started[-1]}
        if not os.path.exists(path):
            assert on_disk is None and not done
            continue
        state = load_file(path)  # complete, or load_file would raise
        assert state['version'] in candidates
        assert_is_complete_version(state)
        on_disk = state['version']
        names = os.listdir(tmp_path)
        killed_mid_write += bool(temp_files(path))
        assert [n for n in names if n.endswith('.pdparams')] == ['model_final.pdparams']
        assert all(n.startswith('.') for n in names if n != 'model_final.pdparams')
    assert on_disk is not None and killed_mid_write >= 1  # the dangerous moment was hit

    # the next write of the same file clears what killed writes left behind
    save_file(dict(load_file(path), version=on_disk + 1), path)
    assert os.listdir(tmp_path) == ['model_final.pdparams']
