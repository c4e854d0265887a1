"""The YAML workspace: _BASE_ order, overrides, typos, safe tags, shared keys, runtime keys."""
import logging
import os
import textwrap

import pytest

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import ComponentSpec, create, load_config, merge_config, register, \
    serializable
from ppdet.utils.cli import run_main

from conftest import ROOT


@register
class _ProbeLoss:
    def __init__(self, weight=1.0):
        self.weight = weight


@register
class _ProbeHead:
    __shared__ = ['num_classes']
    __inject__ = ['loss']

    def __init__(self, num_classes=80, channels=[256, 256], loss=None, use_dcn=False):
        self.num_classes, self.channels, self.loss, self.use_dcn = \
            num_classes, channels, loss, use_dcn


@serializable
class _ProbeSchedule:
    def __init__(self, gamma=0.1, milestones=[8, 11]):
        self.gamma, self.milestones = gamma, milestones


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_base_files_merge_in_order_and_own_keys_win(tmp_path):
    write(tmp_path, 'base/a.yml', """
        epoch: 1
        _ProbeHead: {channels: [1, 1], use_dcn: true}
    """)
    write(tmp_path, 'base/b.yml', """
        epoch: 2
        _ProbeHead: {channels: [2, 2]}
    """)
    path = write(tmp_path, 'main.yml', """
        _BASE_: ['base/a.yml', 'base/b.yml']
        log_iter: 5
        _ProbeHead: {num_classes: 3}
    """)
    cfg = load_config(path)
    assert cfg.epoch == 2                                  # later base wins
    assert cfg['_ProbeHead'] == {'channels': [2, 2], 'use_dcn': True, 'num_classes': 3}
    assert cfg.filename == 'main'


def test_nested_base_resolves_relative_to_each_file(tmp_path):
    write(tmp_path, 'x/y/deep.yml', 'epoch: 7\n')
    write(tmp_path, 'x/mid.yml', "_BASE_: ['y/deep.yml']\nlog_iter: 3\n")
    cfg = load_config(write(tmp_path, 'top.yml', "_BASE_: ['x/mid.yml']\n"))
    assert (cfg.epoch, cfg.log_iter) == (7, 3)


def test_missing_base_names_the_file(tmp_path):
    path = write(tmp_path, 'main.yml', "_BASE_: ['nope.yml']\n")
    with pytest.raises(ConfigError, match=r'main\.yml.*nope\.yml'):
        load_config(path)


def test_override_is_applied_and_parsed_as_yaml(tmp_path):
    cfg = load_config(write(tmp_path, 'm.yml', """
        epoch: 12
        _ProbeHead: {channels: [1, 2]}
    """))
    merge_config(['epoch=3', '_ProbeHead.channels=[4, 5]', '_ProbeHead.use_dcn=true'], cfg)
    assert cfg.epoch == 3
    head = create('_ProbeHead', cfg)
    assert head.channels == [4, 5] and head.use_dcn is True


def test_override_of_unknown_key_is_refused_with_suggestion(tmp_path):
    cfg = load_config(write(tmp_path, 'm.yml', '_ProbeHead: {}\nepoch: 1\n'))
    with pytest.raises(ConfigError, match='did you mean `num_classes`'):
        merge_config(['_ProbeHead.num_clases=3'], cfg)
    with pytest.raises(ConfigError, match='did you mean `epoch`'):
        merge_config(['epochs=3'], cfg)


def test_typo_in_section_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, 'user.yml', '_ProbeHead: {use_dnc: true}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert 'user.yml' in message and '`use_dnc`' in message and 'did you mean `use_dcn`' in message


def test_unknown_component_name_is_refused(tmp_path):
    cfg = load_config(write(tmp_path, 'u.yml', '_ProbeHead: {loss: _ProbeLos}\n'))
    with pytest.raises(ConfigError, match='did you mean `_ProbeLoss`'):
        create('_ProbeHead', cfg)


def test_string_where_list_is_needed_is_refused(tmp_path):
    with pytest.raises(ConfigError, match='channels.*must be a list'):
        load_config(write(tmp_path, 't.yml', "_ProbeHead: {channels: '256'}\n"))


def test_python_object_tags_are_not_loaded(tmp_path):
    marker = tmp_path / 'pwned'
    path = write(tmp_path, 'evil.yml', f"""
        epoch: !!python/object/apply:os.system ["touch {marker}"]
    """)
    with pytest.raises(ConfigError, match='evil.yml'):
        load_config(path)
    assert not marker.exists()


def test_only_allow_listed_tags_build_specs(tmp_path):
    cfg = load_config(write(tmp_path, 's.yml', """
        LearningRate:
          schedulers:
          - !_ProbeSchedule {gamma: 0.5}
    """))
    spec = cfg.LearningRate['schedulers'][0]
    assert spec == ComponentSpec('_ProbeSchedule', {'gamma': 0.5})
    assert spec.build().gamma == 0.5
    with pytest.raises(ConfigError, match='not allowed'):
        load_config(write(tmp_path, 'bad.yml', 'x: !Popen {args: ls}\n'))


def test_shared_keys_reach_components_unless_set_locally(tmp_path):
    cfg = load_config(write(tmp_path, 'sh.yml', """
        num_classes: 7
        _ProbeHead: {loss: _ProbeLoss}
        _ProbeLoss: {weight: 2.5}
    """))
    head = create('_ProbeHead', cfg)
    assert head.num_classes == 7
    assert isinstance(head.loss, _ProbeLoss) and head.loss.weight == 2.5
    merge_config(['_ProbeHead.num_classes=3'], cfg)
    assert create('_ProbeHead', cfg).num_classes == 3


def test_inject_accepts_a_mapping_with_name(tmp_path):
    cfg = load_config(write(tmp_path, 'inj.yml', """
        _ProbeHead: {loss: {name: _ProbeLoss, weight: 9.0}}
    """))
    assert create('_ProbeHead', cfg).loss.weight == 9.0


def test_components_build_from_plain_arguments():
    head = _ProbeHead(num_classes=2, loss=_ProbeLoss(0.5))
    assert head.num_classes == 2 and head.loss.weight == 0.5


def test_loading_a_second_config_does_not_leak_into_the_first(tmp_path):
    a = load_config(write(tmp_path, 'a.yml', 'epoch: 1\n'))
    b = load_config(write(tmp_path, 'b.yml', 'log_iter: 4\n'))
    assert 'log_iter' not in a and 'epoch' not in b


def test_script_prints_one_line_error_for_a_typo(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, 'typo.yml', "_BASE_: ['%s/configs/runtime.yml']\nlog_itre: 5\n" % ROOT)
    monkeypatch.syspath_prepend(os.path.join(ROOT, 'tools'))
    import print_config
    with pytest.raises(SystemExit) as stop:
        run_main(print_config.main, ['-c', path])
    assert stop.value.code != 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and 'warn' not in ln.lower()]
    assert lines[-1].startswith('error:') and 'did you mean `log_iter`' in lines[-1]
    assert 'Traceback' not in err


def test_cross_section_checks_run_on_load_and_override(tmp_path):
    from ppdet.core.config import _CHECKS, config_check

    @config_check
    def epoch_positive(cfg):
        if cfg.get('epoch', 1) <= 0:
            raise ConfigError('epoch must be positive')
    try:
        with pytest.raises(ConfigError, match='positive'):
            load_config(write(tmp_path, 'e.yml', 'epoch: 0\n'))
        cfg = load_config(write(tmp_path, 'f.yml', 'epoch: 2\n'))
        with pytest.raises(ConfigError, match='positive'):
            merge_config(['epoch=-1'], cfg)
    finally:
        _CHECKS.remove(epoch_positive)


def warnings_in(records):
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def test_compatibility_keys_that_ask_for_something_warn_once_naming_the_key(tmp_path,
                                                                            ppdet_log):
    path = write(tmp_path, 'compat.yml', """
        use_xpu: true
        print_flops: false
        export: {post_process: false, nms: true}
    """)
    cfg = load_config(path)
    merge_config(['epoch=2'], cfg)                       # validation runs again
    warned = warnings_in(ppdet_log)
    assert len(warned) == 2, warned
    xpu, post = sorted(warned, key=lambda m: 'export' in m)
    assert 'compat.yml: use_xpu: True has no effect here' in xpu
    assert 'export.post_process: False has no effect here' in post
    merge_config(['print_params=true'], cfg)
    assert 'print_params: True has no effect here (tools/model_stats.py' in \
        warnings_in(ppdet_log)[-1]


def test_export_section_refuses_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match=r'e\.yml: unknown key `post_proces` in section '
                                          r'`export` \(did you mean `post_process`\?\)'):
        load_config(write(tmp_path, 'e.yml', 'export: {post_proces: true}\n'))


@pytest.mark.parametrize('key', ['quickstart_data', 'debug', 'print_flop'])
def test_keys_that_nothing_reads_are_refused(tmp_path, key):
    with pytest.raises(ConfigError, match=f'unknown top-level key `{key}`'):
        load_config(write(tmp_path, 'k.yml', f'{key}: 1\n'))


@pytest.mark.parametrize('text, message', [
    ('nan_policy: skp', 'nan_policy must be one of stop, skip'),
    ('metric: VOC', 'metric must be one of COCO'),
    ('amp_level: O3', 'amp_level must be one of O1, O2'),
    ('log_iter: 0', 'log_iter must be a positive integer'),
    ('snapshot_epoch: 1.5', 'snapshot_epoch must be a positive integer')])
def test_runtime_values_that_cannot_work_are_refused_by_the_script(tmp_path, capsys, text,
                                                                   message):
    import train
    path = write(tmp_path, 'v.yml', text + '\n')
    with pytest.raises(SystemExit) as exit_info:
        run_main(train.main, ['-c', path])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err
    assert 'v.yml' in err and message in err
