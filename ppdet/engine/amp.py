"""Mixed precision (``--amp``): its settings and the autocast context that applies them."""
import logging
from dataclasses import dataclass
from typing import Optional

import paddle

from ppdet.core.errors import ConfigError

__all__ = ['AmpSettings', 'amp_settings', 'autocast']

logger = logging.getLogger('ppdet')


@dataclass(frozen=True)
class AmpSettings:
    level: str = 'O1'
    custom_white_list: Optional[list] = None
    custom_black_list: Optional[list] = None
    init_loss_scaling: float = 1024


def amp_settings(cfg, device):
    """The config's AMP settings, or None: AMP off, or on the CPU (paddle runs float32 there)."""
    if not cfg.get('amp'):
        return None
    if device == 'cpu':
        logger.warning('--amp has no effect on the CPU (paddle runs float32 there); '
                       'training in float32')
        return None
    level = cfg.get('amp_level', 'O1')
    if level not in ('O1', 'O2'):
        raise ConfigError(f'amp_level must be O1 or O2, got {level}')
    return AmpSettings(level, cfg.get('custom_white_list'), cfg.get('custom_black_list'),
                       cfg.get('init_loss_scaling', 1024))


def autocast(amp):
    """``paddle.amp.auto_cast`` with ``amp`` (an :class:`AmpSettings`), disabled for None."""
    if amp is None:
        return paddle.amp.auto_cast(enable=False)
    return paddle.amp.auto_cast(enable=True, level=amp.level,
                                custom_white_list=amp.custom_white_list,
                                custom_black_list=amp.custom_black_list)
