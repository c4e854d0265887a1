"""The SOLOv2 grid levels: what the head predicts on and what the training targets are laid on."""
from dataclasses import dataclass

from ppdet.core.errors import ConfigError
from ppdet.core.workspace import REGISTRY

__all__ = ['SOLOv2Grids', 'DEFAULT_GRIDS', 'as_lists', 'config_grids']


def as_lists(value):
    """Tuples (YAML flow sequences, dataclass fields) compared as lists."""
    return [as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class SOLOv2Grids:
    """One entry per FPN level ``l``: an ``num_grids[l] x num_grids[l]`` grid of cells, the
    stride ``strides[l]`` of its feature map (a predicted mask must be larger than it), and
    the inclusive range ``scale_ranges[l] = [lo, hi]`` of instance sizes (square root of the
    box area, in input pixels) the level is responsible for; ranges may overlap.
    """
    num_grids: list
    strides: list
    scale_ranges: list

    def __post_init__(self):
        fields = {'num_grids': self.num_grids, 'strides': self.strides,
                  'scale_ranges': self.scale_ranges}
        if not all(isinstance(v, (list, tuple)) for v in fields.values()) or \
                len({len(v) for v in fields.values()}) != 1:
            raise ConfigError(f'SOLOv2 grids: num_grids, strides and scale_ranges need one entry '
                              f'per level, got {fields}')
        if not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in self.scale_ranges):
            raise ConfigError(f'SOLOv2 grids: each scale range is [lo, hi], got '
                              f'{self.scale_ranges}')
        for name, value in fields.items():
            object.__setattr__(self, name, as_lists(value))

    @property
    def num_levels(self):
        return len(self.num_grids)

    @property
    def num_cells(self):
        return sum(grid * grid for grid in self.num_grids)


DEFAULT_GRIDS = SOLOv2Grids(num_grids=[40, 36, 24, 16, 12], strides=[8, 8, 16, 32, 32],
                            scale_ranges=[[1, 96], [48, 192], [96, 384], [192, 768],
                                          [384, 2048]])


def config_grids(cfg):
    """``(grids, where)`` of the config's architecture: its grids as the model will be built,
    and for each field where it was set (for messages); None when the architecture has none."""
    architecture = cfg.get('architecture')
    cls = REGISTRY.get(architecture) if isinstance(architecture, str) else None
    from_config = getattr(cls, 'grids_from_config', None)
    return from_config(cfg) if from_config is not None else None
