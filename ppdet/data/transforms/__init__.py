"""Sample and batch transforms, built from reader entries ``{OpName: {kwargs}}``.

A sample transform is called as ``op(sample, rng)`` with a ``numpy.random.Generator`` that the
reader seeds per sample (see :mod:`ppdet.data.reader`); a batch transform as ``op(samples)``.
Both return their result and never modify arrays they were given.
"""
from ppdet.core.errors import ConfigError
from ppdet.core.workspace import check_section, closest

__all__ = ['TRANSFORMS', 'register_op', 'build_transforms', 'parse_entry', 'check_entry_list']

TRANSFORMS = {}


def register_op(cls):
    """Make ``cls`` usable by name in a reader's transform lists."""
    TRANSFORMS[cls.__name__] = cls
    return cls


def parse_entry(entry, where):
    """``{OpName: {kwargs}}`` -> (name, kwargs), checked against the op's signature."""
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(f'{where}: each transform must be one `OpName: {{args}}` entry, '
                          f'got {entry!r:.80}')
    (name, kwargs), = entry.items()
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise ConfigError(f'{where}: unknown transform `{name}`{closest(name, TRANSFORMS)}')
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f'{where}: the arguments of `{name}` must be a mapping like '
                          f'{{key: value}}, got {kwargs!r:.40}')
    kwargs = dict(kwargs or {})
    check_section(name, TRANSFORMS[name], kwargs, where)
    return name, kwargs


def check_entry_list(entries, where):
    """``entries`` must be a list of transform entries (or empty)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f'{where}: must be a list of `- OpName: {{args}}` entries, got '
                          f'{entries!r:.40}')
    return entries


def build_transforms(entries, where):
    """Build the ops of one list."""
    ops = []
    for entry in check_entry_list(entries, where):
        name, kwargs = parse_entry(entry, where)
        ops.append(TRANSFORMS[name](**kwargs))
    return ops


from . import operators, batch_operators, solov2_target  # noqa: E402,F401  (registers the ops)
