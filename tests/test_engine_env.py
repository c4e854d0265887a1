"""CPU thread policy: the config key, then the user's OMP_NUM_THREADS, then the cores per rank."""
import paddle
import ppdet
import pytest

from ppdet.core.errors import ConfigError
from ppdet.engine import Trainer
from ppdet.engine.env import cpu_threads

from fixtures.tiny_training import TinyModel, make_cfg


def test_config_key_wins_over_environment_and_cores():
    assert cpu_threads(3, user_env='5', cores=8, local_ranks=1) == 3


def test_user_environment_wins_over_cores():
    assert cpu_threads(None, user_env='5', cores=8, local_ranks=1) == 5


def test_cores_are_shared_among_local_ranks():
    assert cpu_threads(None, user_env=None, cores=8, local_ranks=1) == 8
    assert cpu_threads(None, user_env=None, cores=8, local_ranks=4) == 2
    assert cpu_threads(None, user_env=None, cores=2, local_ranks=4) == 1


@pytest.mark.parametrize('bad_env', ['', '0', 'two'])
def test_unusable_environment_falls_back_to_cores(bad_env):
    assert cpu_threads(None, user_env=bad_env, cores=6, local_ranks=2) == 3


@pytest.mark.parametrize('bad', [0, -1, 'two', 1.5, True])
def test_bad_config_value_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match='cpu_threads'):
        cpu_threads(bad)


def test_trainer_applies_the_policy_on_cpu(tmp_path, monkeypatch):
    applied = []
    monkeypatch.setattr(paddle.base.core, 'set_num_threads', applied.append)
    Trainer(make_cfg(tmp_path, cpu_threads=1), mode='eval', model=TinyModel())
    Trainer(make_cfg(tmp_path), mode='eval', model=TinyModel())
    assert applied[0] == 1
    assert applied[1] == cpu_threads(None, ppdet.USER_OMP_NUM_THREADS)


def test_bad_value_in_a_config_file_fails_at_load_naming_the_file(tmp_path):
    from ppdet.core.config import load_config
    path = tmp_path / 'threads.yml'
    path.write_text('cpu_threads: 0\n')
    with pytest.raises(ConfigError, match=r'threads\.yml: cpu_threads must be a positive'):
        load_config(str(path))
