"""Fuzzing the config loader: random and mutated YAML either loads or raises a PPDetError."""
import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ppdet.core.config import RUNTIME_KEYS, load_config, merge_overrides
from ppdet.core.errors import PPDetError

from conftest import ROOT
import fixtures.fuzz_components  # noqa: F401  (registers the _Fuzz* components)


KEYS = sorted(RUNTIME_KEYS)[:12] + [
    '_FuzzHead', '_FuzzLoss', 'num_classes', 'channels', 'loss', 'use_dcn', 'ratio', 'name',
    'name_hint', 'weight', 'gamma', 'milestones', '_BASE_', 'epoch', 'nan_policy', 'x']


class Tagged:
    """A ``!Name {kwargs}`` node in generated YAML."""

    def __init__(self, name, kwargs):
        self.name, self.kwargs = name, kwargs


class _Dumper(yaml.SafeDumper):
    pass




def _represent_tagged(dumper, tagged):
    node = dumper.represent_data(tagged.kwargs)
    node.tag = '!' + tagged.name
    return node


_Dumper.add_representer(Tagged, _represent_tagged)

scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(['_FuzzLoss', '_FuzzHead', 'missing.yml', '.', '..', '~']))
# Error messages echo keys and -o options as given: keep newlines out of those.
one_line = st.text(st.characters(blacklist_characters='\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029',
                                 blacklist_categories=['Cs']), max_size=20)
keys = st.sampled_from(KEYS) | one_line | st.integers(-3, 3) | st.booleans()
tags = st.sampled_from(['_FuzzSchedule'] * 4 + ['_FuzzHead', 'Unknown', 'python/name:os.system',
                                                'python/object/apply:os.system'])
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(keys, inner, max_size=4)
                   | st.builds(Tagged, tags, st.dictionaries(keys, inner, max_size=3))),
    max_leaves=20)


def section(*names):
    """A component section: mostly its own keys, sometimes a stray one, or not a mapping."""
    return (st.dictionaries(st.sampled_from(names), values, max_size=len(names))
            | st.dictionaries(st.sampled_from(names) | keys, values, max_size=3) | values)


config_like = st.fixed_dictionaries({}, optional={
    'epoch': scalars, 'num_classes': scalars, 'log_iter': scalars,
    '_FuzzHead': section('num_classes', 'channels', 'loss', 'use_dcn', 'ratio', 'name_hint'),
    '_FuzzLoss': section('weight'),
    'LearningRate': st.fixed_dictionaries({}, optional={
        'base_lr': scalars, 'schedulers': st.lists(st.builds(Tagged, tags, section(
            'gamma', 'milestones')), max_size=2)}),
    'custom_white_list': values})
documents = (config_like
             | st.builds(lambda known, extra: {**known, **extra}, config_like,
                         st.dictionaries(keys, values, min_size=1, max_size=2))
             | values)


def tree_copy(tmp_path_factory):
    """A scratch folder with a valid base file next to the generated configs."""
    folder = tmp_path_factory.mktemp('fuzzcfg')
    (folder / 'base.yml').write_text('epoch: 3\n_FuzzHead: {channels: [8, 8]}\n')
    (folder / 'sub').mkdir()
    return folder


def loads_or_refuses(path):
    try:
        load_config(str(path))
    except PPDetError as err:
        assert str(err) and '\n' not in str(err).strip(), str(err)


@given(document=documents, bases=st.lists(
    st.sampled_from(['base.yml'] * 4 + ['main.yml', 'sub', 'nothing.yml', '/', '']), max_size=3))
def test_generated_configs(tmp_path_factory, document, bases):
    folder = tree_copy(tmp_path_factory)
    if isinstance(document, dict) and bases:
        document = dict(document, _BASE_=bases)
    text = yaml.dump(document, Dumper=_Dumper, allow_unicode=True)
    path = folder / 'main.yml'
    path.write_text(text, encoding='utf-8')
    loads_or_refuses(path)
    shutil.rmtree(folder)


@given(data=st.binary(max_size=300) | st.text(max_size=300).map(
    lambda t: t.encode('utf-8', 'surrogatepass')))
def test_random_bytes_as_config(tmp_path_factory, data):
    path = tmp_path_factory.mktemp('rawcfg') / 'random.yml'
    path.write_bytes(data)
    loads_or_refuses(path)


SEED_CONFIG = os.path.join(ROOT, 'configs', 'quickstart.yml')


@given(edits=st.lists(st.tuples(st.sampled_from(['delete', 'duplicate', 'indent', 'dedent',
                                                  'replace', 'insert']),
                                st.integers(0, 10 ** 4), st.text(max_size=10)),
                      min_size=1, max_size=4))
def test_mutated_real_configs(tmp_path_factory, edits):
    folder = tmp_path_factory.mktemp('mutcfg')
    configs = folder / 'configs'
    shutil.copytree(os.path.join(ROOT, 'configs'), configs)
    lines = open(SEED_CONFIG, encoding='utf-8').read().splitlines()
    for op, where, text in edits:
        i = where % len(lines)
        if op == 'delete' and len(lines) > 1:
            del lines[i]
        elif op == 'duplicate':
            lines.insert(i, lines[i])
        elif op == 'indent':
            lines[i] = '  ' + lines[i]
        elif op == 'dedent':
            lines[i] = lines[i].lstrip()
        elif op == 'replace' and ':' in lines[i]:
            lines[i] = lines[i].split(':', 1)[0] + ': ' + text
        elif op == 'insert':
            lines.insert(i, text)
    path = configs / 'quickstart.yml'
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8', errors='surrogatepass')
    loads_or_refuses(path)
    shutil.rmtree(folder)


@pytest.fixture(scope='module')
def probe_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('probe') / 'probe.yml'
    path.write_text(textwrap.dedent("""
        epoch: 2
        num_classes: 3
        _FuzzHead: {channels: [8, 8], loss: _FuzzLoss}
        _FuzzLoss: {weight: 2.0}
        LearningRate: {base_lr: 0.01, schedulers: [!_FuzzSchedule {gamma: 0.5}]}
    """))
    return load_config(str(path))


option_keys = st.lists(st.sampled_from(KEYS) | one_line, min_size=1, max_size=3).map('.'.join)
option_values = one_line | values.map(
    lambda v: yaml.dump(v, Dumper=_Dumper, default_flow_style=True, width=10 ** 6)
    .replace('\n...\n', '').strip()).filter(lambda text: '\n' not in text)
options = st.lists(st.tuples(option_keys, option_values).map('='.join) | one_line, max_size=4)


@given(opts=options | st.dictionaries(st.sampled_from(KEYS) | one_line, values, max_size=3))
def test_random_overrides(probe_config, opts):
    cfg = copy.deepcopy(probe_config)
    try:
        merge_overrides(cfg, opts)
    except PPDetError as err:
        assert str(err) and '\n' not in str(err).strip(), str(err)


# 10 ** 9 list items if expanded: printing it in an error message would never end.
ALIAS_BOMB = ('custom_white_list:\n- &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n'
              + ''.join(f'- &l{i} [{", ".join([f"*l{i - 1}"] * 10)}]\n' for i in range(1, 9))
              + '_FuzzHead: {ratio: *l8}\n')



def test_alias_bombs_and_deep_nesting_neither_hang_nor_crash(tmp_path):
    texts = [ALIAS_BOMB, ALIAS_BOMB.replace('_FuzzHead: {ratio', 'epoch: {x'),
             '[' * 5000 + ']' * 5000, 'a: ' + '{b: ' * 3000 + '1' + '}' * 3000]
    paths = []
    for k, text in enumerate(texts):
        paths.append(str(tmp_path / f'bomb{k}.yml'))
        with open(paths[-1], 'w') as f:
            f.write(text)
    bomb_value = ALIAS_BOMB.split('\n', 1)[1].replace('\n- ', ', ').replace('- ', '[', 1)
    bomb_option = '_FuzzHead.ratio=' + bomb_value.split('\n')[0] + ']'
    # in a child process: a hang must not hang the test run
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]
        import fixtures.fuzz_components
        from ppdet.core.config import load_config, merge_overrides
        from ppdet.core.errors import PPDetError
        for path in {paths!r}:
            try:
                load_config(path)
            except PPDetError as err:
                print('refused:', err)
        try:
            merge_overrides(load_config({paths[1]!r}), [{bomb_option!r}])
        except PPDetError as err:
            print('refused:', err)
    """)
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    refusals = [line for line in run.stdout.splitlines() if line.startswith('refused:')]
    assert len(refusals) == 4, run.stdout[:2000]  # bomb1 is a valid config
    assert all(len(line) < 1000 for line in refusals), run.stdout[:2000]
