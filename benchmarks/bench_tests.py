"""The test suite's cost: wall and CPU time of the README's test command, in all and per test,
and the Python interpreters it starts.

    python benchmarks/bench_tests.py [--tree PATH ...] [--runs 1] [--top 25] [--tests tests]

Each tree (default: this repository; give another checkout to compare with, e.g. one made by
``git worktree add /tmp/before COMMIT``) runs its README's test command (``python -m pytest``
with that README's options, e.g. ``-q -n 2``) in a child process, the trees taking turns
``--runs`` times, with two probes on the child's path: a pytest plugin that records each test's
wall time and CPU time (its own process and the children it waited for; in each pytest-xdist
worker), and a ``sitecustomize`` that notes every interpreter started and whether it imported
paddle (an interpreter killed by a test or started with another ``PYTHONPATH`` is not seen
exiting, or not at all). CPU time is steadier than wall time when other jobs share the cores;
both are given, with the load average before and after each run.
"""
import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLUGIN = textwrap.dedent('''
    """Per-test wall and CPU seconds (setup, call and teardown), for bench_tests.py."""
    import json, os, resource, time
    import pytest

    _TESTS = {}

    def _cpu():
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        wall, cpu = time.perf_counter(), _cpu()
        yield
        _TESTS[item.nodeid] = (time.perf_counter() - wall, _cpu() - cpu)

    def pytest_sessionfinish(session):
        if _TESTS:                      # a pytest-xdist controller runs no test itself
            with open(f"{os.environ['BENCH_TESTS_OUT']}.{os.getpid()}", 'w') as f:
                json.dump(_TESTS, f)
''')

SITECUSTOMIZE = textwrap.dedent('''
    """Notes each interpreter's start, and at its exit whether it imported paddle."""
    import atexit, os, sys
    _log = os.environ.get('BENCH_TESTS_INTERPRETERS')
    if _log:
        with open(_log, 'a') as f:
            f.write(f'start {os.getpid()}\\n')

        def _exit():
            with open(_log, 'a') as f:
                f.write(f'exit {os.getpid()} {"paddle" in sys.modules}\\n')
        atexit.register(_exit)
''')


def load_average():
    return '/'.join(f'{x:.1f}' for x in os.getloadavg())


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def readme_pytest_options(tree):
    """The options of the ``python -m pytest`` command in ``tree``'s README, without its test
    paths (``-q`` where the README has none)."""
    with open(os.path.join(tree, 'README.md')) as f:
        match = re.search(r'python -m pytest((?: -\w+(?: \d+)?)*)', f.read())
    return match.group(1).split() if match else ['-q']


def run_suite(tree, probes, tests):
    """One run of the test command in ``tree``: a dict of its figures."""
    out, log = os.path.join(probes, 'tests.json'), os.path.join(probes, 'interpreters.log')
    for path in glob.glob(out + '.*') + [log]:
        if os.path.exists(path):
            os.remove(path)
    options = readme_pytest_options(tree)
    env = dict(os.environ, BENCH_TESTS_OUT=out, BENCH_TESTS_INTERPRETERS=log,
               PYTHONPATH=os.pathsep.join(filter(None, [probes, os.environ.get('PYTHONPATH')])))
    load_before, wall, cpu = load_average(), time.perf_counter(), children_cpu()
    proc = subprocess.run([sys.executable, '-m', 'pytest', *options, *tests, '-p', 'suite_probe'],
                          cwd=tree, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    summary = next((line.strip('= ') for line in reversed(proc.stdout.splitlines())
                    if re.search(r'\d+ (passed|failed)', line)), f'exit code {proc.returncode}')
    with open(log) as f:
        events = [line.split() for line in f]
    tests = {}
    for path in glob.glob(out + '.*'):
        with open(path) as f:
            tests.update(json.load(f))
    return {'tree': tree, 'options': ' '.join(options), 'summary': re.sub(r' in [\d.]+s.*', '', summary), 'wall': wall,
            'cpu': cpu, 'load': f'{load_before} -> {load_average()}', 'tests': tests,
            # the pytest process itself is not counted
            'interpreters': sum(e[0] == 'start' for e in events) - 1,
            'paddle': sum(e[0] == 'exit' and e[2] == 'True' for e in events) - 1}


def print_tables(runs, top):
    from ppdet.utils.cpuinfo import describe_cpu
    import paddle
    print(f'test suite, {time.strftime("%Y-%m-%d %H:%M")}, {describe_cpu(os.cpu_count())}, '
          f'paddle {paddle.__version__}')
    print(f'{"tree":<32} {"options":<8} {"result":<32} {"wall s":>7} {"CPU s":>7} '
          f'{"interpreters":>12} {"(paddle)":>8}  load 1/5/15 min')
    for r in runs:
        print(f'{r["tree"][-32:]:<32} {r["options"]:<8} {r["summary"][:32]:<32} {r["wall"]:7.1f} '
              f'{r["cpu"]:7.1f} {r["interpreters"]:12d} {r["paddle"]:8d}  {r["load"]}')
    trees = list(dict.fromkeys(r['tree'] for r in runs))
    if len(trees) > 1:
        first, *others = [[r for r in runs if r['tree'] == t] for t in trees]
        for tree, mine in zip(trees[1:], others):
            for key in ('wall', 'cpu'):
                ratio = sum(r[key] for r in mine) / sum(r[key] for r in first)
                print(f'{tree[-32:]} / {trees[0][-32:]}: {key} x{ratio:.2f}')
    for tree in trees:
        last = [r for r in runs if r['tree'] == tree][-1]
        print(f'\nslowest {top} tests by wall time, {tree} (CPU: own process and children)')
        print(f'{"wall s":>7} {"CPU s":>7}  test')
        for name, (wall, cpu) in sorted(last['tests'].items(), key=lambda t: -t[1][0])[:top]:
            print(f'{wall:7.2f} {cpu:7.2f}  {name}')


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tree', nargs='+', default=[ROOT],
                        help='repository checkouts to run the tests of (default: this one)')
    parser.add_argument('--runs', type=int, default=1, help='runs per tree, taking turns')
    parser.add_argument('--top', type=int, default=25, help='slowest tests to list')
    parser.add_argument('--tests', nargs='+', default=['tests'],
                        help='what pytest runs (default: the whole suite, as the README says)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as probes:
        for name, text in (('suite_probe.py', PLUGIN), ('sitecustomize.py', SITECUSTOMIZE)):
            with open(os.path.join(probes, name), 'w') as f:
                f.write(text)
        runs = [run_suite(os.path.abspath(tree), probes, args.tests)
                for _ in range(args.runs) for tree in args.tree]
    print_tables(runs, args.top)


if __name__ == '__main__':
    main()
