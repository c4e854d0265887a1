"""Loading YAML configs: ``_BASE_`` inheritance, ``-o`` overrides and validation.

YAML is read with a safe loader: no Python object tags; the only custom tags are the classes
decorated with :func:`~ppdet.core.workspace.serializable`, which become
:class:`~ppdet.core.workspace.ComponentSpec` values (data, built later).
"""
import copy
import logging
import os

import yaml

from .errors import ConfigError
from .runtime_keys import RUNTIME_KEYS, check_runtime_values
from .workspace import (REGISTRY, SERIALIZABLE, ComponentSpec, check_section, closest,
                        short_repr)

__all__ = ['Config', 'load_config', 'merge_overrides', 'parse_overrides', 'current_config',
           'dump_config', 'config_check', 'RUNTIME_KEYS']

BASE_KEY = '_BASE_'

logger = logging.getLogger('ppdet')

_current = None
_CHECKS = []


def config_check(fn):
    """Register ``fn(cfg)``, run on every loaded or overridden config (raises ConfigError).

    For rules that span sections, e.g. the head and the target generator agreeing on grids.
    """
    _CHECKS.append(fn)
    return fn


def current_config():
    """The config most recently returned by :func:`load_config` (what ``create`` uses)."""
    return _current


class Config(dict):
    """A config mapping with attribute access that remembers which file set each key."""

    def __init__(self, data=None, sources=None):
        super().__init__(data or {})
        object.__setattr__(self, '_sources', dict(sources or {}))
        object.__setattr__(self, '_warned', set())

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo), self._sources)

    def source_of(self, key):
        return self._sources.get(key)

    def warn_once(self, topic, message):
        """Log ``message`` the first time ``topic`` comes up for this config (validation runs
        again after every override)."""
        if topic not in self._warned:
            self._warned.add(topic)
            logger.warning(message)

    def with_section(self, name, overlay):
        """A copy whose section ``name`` is updated with ``overlay``."""
        new = copy.deepcopy(self)
        section = dict(new.get(name) or {})
        section.update(overlay)
        new[name] = section
        return new


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the explicit allow-list of component tags."""


def _construct_tagged(loader, suffix, node):
    if suffix not in SERIALIZABLE:
        raise yaml.constructor.ConstructorError(
            None, None, f'tag !{suffix} is not allowed{closest(suffix, SERIALIZABLE)}',
            node.start_mark)
    kwargs = loader.construct_mapping(node, deep=True) if isinstance(
        node, yaml.MappingNode) else {}
    return ComponentSpec(suffix, dict(kwargs))


_Loader.add_multi_constructor('!', _construct_tagged)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Config, lambda d, data: d.represent_dict(dict(data)))
_Dumper.add_representer(ComponentSpec,
                        lambda d, spec: d.represent_mapping('!' + spec.name, spec.kwargs))


def dump_config(cfg):
    """The merged config as YAML text (tags kept), for ``tools/print_config.py``."""
    return yaml.dump(dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=None)


def _read_yaml(path):
    if not os.path.isfile(path):
        raise ConfigError(f'{path}: config file not found')
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.load(f, Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:  # not UTF-8, too deep
        where = getattr(e, 'problem_mark', None)
        line = f' (line {where.line + 1})' if where else ''
        problem = getattr(e, 'problem', None) or str(e).splitlines()[0]
        raise ConfigError(f'{path}{line}: invalid YAML: {problem}') from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: a config must be a mapping of keys, got {type(data).__name__}')
    return data


def _deep_merge(dst, src, sources, source):
    """Merge ``src`` into ``dst``: mappings key by key, anything else replaces."""
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value, None, source)
        else:
            dst[key] = copy.deepcopy(value)
        if sources is not None:
            sources[key] = source
    return dst


def _load_tree(path, sources, stack):
    path = os.path.abspath(os.path.expanduser(path))
    if path in stack:
        raise ConfigError(f'{path}: `_BASE_` includes itself (cycle through {stack[-1]})')
    own = _read_yaml(path)
    merged = {}
    bases = own.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f'{path}: `_BASE_` must be a list of file paths')
    folder = os.path.dirname(path)
    for base in bases:
        base_path = os.path.expanduser(str(base))
        if not os.path.isabs(base_path):
            base_path = os.path.join(folder, base_path)
        if not os.path.isfile(base_path):
            raise ConfigError(f'{path}: `_BASE_` file {base} not found (looked for '
                              f'{os.path.normpath(base_path)})')
        _deep_merge(merged, _load_tree(base_path, sources, stack + [path]), None, None)
    _deep_merge(merged, own, sources, path)
    return merged


def known_top_level_keys():
    """Runtime keys (see :mod:`.runtime_keys`), shared keys of components, section names."""
    shared = set()
    for cls in REGISTRY.values():
        shared.update(getattr(cls, '__shared__', ()))
    return RUNTIME_KEYS | shared | set(REGISTRY)


def validate(cfg):
    """Check every section of a registered component and every top-level key."""
    known = known_top_level_keys()
    for key, value in cfg.items():
        if key not in known:
            raise ConfigError(f'{cfg.source_of(key) or "config"}: unknown top-level key '
                              f'`{key}`{closest(key, known)}')
        if key in REGISTRY and isinstance(value, dict):
            check_section(key, REGISTRY[key], value, cfg.source_of(key))
    check_runtime_values(cfg)
    for check in _CHECKS:
        check(cfg)


def load_config(path):
    """Load ``path`` with its ``_BASE_`` files into a validated :class:`Config`."""
    global _current
    import ppdet  # noqa: F401  (registers every component before validation)
    sources = {}
    data = _load_tree(path, sources, [])
    cfg = Config(data, sources)
    cfg['filename'] = os.path.splitext(os.path.basename(path))[0]
    validate(cfg)
    _current = cfg
    return cfg


def parse_overrides(options):
    """``['a.b=1', 'c=[1, 2]']`` -> nested dict, values parsed as YAML."""
    result = {}
    for option in options or []:
        if '=' not in option:
            raise ConfigError(f'-o {option}: expected key=value')
        key, text = option.split('=', 1)
        try:
            value = yaml.load(text, Loader=_Loader) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f'-o {option}: cannot parse the value as YAML') from e
        node = result
        parts = key.strip().split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f'-o {option}: `{part}` is set twice')
        node[parts[-1]] = value
    return result


def _schema_of(name, node):
    """The registered class a config node describes: by section name or its `name` key."""
    if name in REGISTRY:
        return REGISTRY[name]
    if isinstance(node, dict) and node.get('name') in REGISTRY:
        return REGISTRY[node['name']]
    return None


def _check_override(cfg, path, value, option):
    """Refuse an override whose key exists nowhere (typos must not pass silently)."""
    top = path[0]
    if top not in cfg and top not in known_top_level_keys():
        raise ConfigError(f'-o {option}: no key `{top}` in the config'
                          f'{closest(top, set(cfg) | known_top_level_keys())}')
    name, node = top, cfg.get(top)
    for depth, part in enumerate(path[1:], start=1):
        cls = _schema_of(name, node)
        leaf = depth == len(path) - 1
        if cls is not None and part != 'name':
            check_section(name, cls, {part: value} if leaf else {part: None}, '-o ' + option)
        elif not isinstance(node, dict) or part not in node:
            where = '.'.join(path[:depth])
            raise ConfigError(f'-o {option}: no key `{part}` under `{where}`'
                              f'{closest(part, node if isinstance(node, dict) else [])}')
        name, node = part, node.get(part) if isinstance(node, dict) else None


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def merge_overrides(cfg, overrides):
    """Merge ``-o`` overrides (a list of ``key=value`` or a nested dict) into ``cfg``.

    Every key must already mean something: a key that exists nowhere is refused.
    """
    tree = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else overrides
    for path, value in _flatten(tree or {}):
        option = '.'.join(map(str, path)) + '=' + short_repr(value)
        _check_override(cfg, list(path), value, option)
    _deep_merge(cfg, tree or {}, cfg._sources, '-o')
    validate(cfg)
    return cfg
