"""The registry: YAML sections keyed by class name become objects.

A class decorated with :func:`register` is buildable by name with :func:`create`.  Its
``__init__`` signature is its schema: the defaults are the documentation, the YAML section of
the same name overrides them, and unknown keys are refused.  Two class attributes follow the
PaddleDetection contract:

* ``__shared__``: keys whose value may come from the top level of the config (``num_classes``,
  ``norm_type``) unless the component's own section sets them.
* ``__inject__``: keys naming another registered component (a string, a mapping with a
  ``name`` key, or a ``!Tag`` spec), created recursively.

A class may also define ``from_config(cls, cfg, **kwargs) -> dict`` to compute constructor
arguments from the rest of the config (e.g. the SOLOv2 architecture wires its children).

Every registered class stays an ordinary class, buildable from plain keyword arguments.
"""
import difflib
import inspect
import reprlib
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ['register', 'serializable', 'create', 'instantiate', 'ComponentSpec',
           'get_schema', 'check_section', 'section_values', 'REGISTRY', 'SERIALIZABLE',
           'load_config', 'merge_config', 'closest', 'short_repr']

REGISTRY = {}
SERIALIZABLE = {}


def register(cls):
    """Make ``cls`` buildable by name from a config section."""
    name = cls.__name__
    if REGISTRY.get(name, cls) is not cls:
        raise ValueError(f'component name {name!r} is registered twice '
                         f'({REGISTRY[name].__module__} and {cls.__module__})')
    REGISTRY[name] = cls
    return cls


def serializable(cls):
    """Allow ``!ClassName {kwargs}`` in YAML for ``cls`` (an explicit allow-list of tags)."""
    SERIALIZABLE[cls.__name__] = cls
    return cls


@dataclass
class ComponentSpec:
    """A ``!Name {kwargs}`` YAML node: what to build, not yet built."""
    name: str
    kwargs: dict = field(default_factory=dict)

    def build(self):
        cls = SERIALIZABLE[self.name]
        check_section(self.name, cls, self.kwargs, source=None)
        return cls(**self.kwargs)


def instantiate(value):
    """Build a :class:`ComponentSpec`; pass anything else through."""
    return value.build() if isinstance(value, ComponentSpec) else value


def closest(word, candidates):
    """The candidate nearest to ``word`` as a " (did you mean `x`?)" suffix, or ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f' (did you mean `{match[0]}`?)' if match else ''


@dataclass(frozen=True)
class Schema:
    """What a registered class accepts, read from its ``__init__`` signature."""
    name: str
    defaults: dict
    required: tuple
    shared: tuple
    inject: tuple
    open_kwargs: bool


def get_schema(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    defaults, required = {}, []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            required.append(p.name)
        else:
            defaults[p.name] = p.default
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    return Schema(cls.__name__, defaults, tuple(required),
                  tuple(getattr(cls, '__shared__', ())), tuple(getattr(cls, '__inject__', ())),
                  open_kwargs)


def _where(source):
    return f'{source}: ' if source else ''


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 60


def short_repr(value):
    """A repr of bounded length: YAML aliases can make a value with billions of items."""
    return _SHORT.repr(value)


def _check_type(name, key, value, default, source):
    """Refuse values that cannot work: a string or a scalar where a list is needed, etc."""
    if value is None or default is None or isinstance(value, ComponentSpec):
        return
    wants_list = isinstance(default, (list, tuple))
    if wants_list and not isinstance(value, (list, tuple)):
        raise ConfigError(f'{_where(source)}`{name}.{key}` must be a list like {list(default)!r}, '
                          f'got {short_repr(value)}')
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f'{_where(source)}`{name}.{key}` must be true or false, '
                              f'got {short_repr(value)}')
    elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f'{_where(source)}`{name}.{key}` must be a number, '
                          f'got {short_repr(value)}')


def check_section(name, cls, section, source):
    schema = get_schema(cls)
    if schema.open_kwargs:
        return
    known = set(schema.defaults) | set(schema.required)
    for key, value in section.items():
        if key not in known:
            raise ConfigError(f'{_where(source)}unknown key `{key}` in section `{name}`'
                              f'{closest(key, known)}')
        if key in schema.defaults:
            _check_type(name, key, value, schema.defaults[key], source)


def section_values(cls, cfg, keys):
    """``{key: (value, where)}``: the value of each key of ``cls``'s section as ``create`` reads
    it (the section's, else the ``__init__`` default) and where it was set, for messages."""
    name = cls.__name__
    section = cfg.get(name) if isinstance(cfg.get(name), dict) else {}
    defaults = get_schema(cls).defaults
    return {key: (section[key], f'{name}.{key} ({cfg.source_of(name) or "config"})')
            if key in section else (defaults[key], f'{name}.{key} (default of {name})')
            for key in keys}


def create(name, cfg=None, **kwargs):
    """Build the registered component ``name`` from ``cfg`` (default: the last loaded config).

    ``kwargs`` are handed to the class's ``from_config`` (not to the constructor), which is
    how a parent passes e.g. its output shapes to a child.
    """
    from .config import current_config
    cfg = current_config() if cfg is None else cfg
    if not isinstance(name, str):
        raise ConfigError(f'expected a component name, got {name!r}')
    if name not in REGISTRY:
        raise ConfigError(f'{_where(cfg.source_of(name) if cfg else None)}unknown component '
                          f'`{name}`{closest(name, REGISTRY)}')
    cls = REGISTRY[name]
    section = cfg.get(name) if cfg is not None else None
    if section is not None and not isinstance(section, dict):
        return section          # an object placed in the config directly
    section = dict(section or {})
    source = cfg.source_of(name) if cfg is not None else None
    check_section(name, cls, section, source)
    schema = get_schema(cls)

    args = dict(section)
    for key in schema.shared:
        if args.get(key) is None and cfg is not None and key in cfg:
            args[key] = cfg[key]
    if hasattr(cls, 'from_config'):
        args.update(cls.from_config(cfg, **kwargs))
    for key in schema.inject:
        if key not in args:
            continue
        args[key] = _inject(args[key], cfg, owner=name, key=key, source=source)
        if args[key] is None:
            del args[key]
    missing = [k for k in schema.required if k not in args]
    if missing:
        raise ConfigError(f'{_where(source)}section `{name}` must set {", ".join(missing)}')
    return cls(**args)


def _inject(value, cfg, owner, key, source):
    if value is None:
        return None
    if isinstance(value, str):
        return create(value, cfg)
    if isinstance(value, ComponentSpec):
        return value.build()
    if isinstance(value, dict):
        if 'name' not in value:
            raise ConfigError(f'{_where(source)}`{owner}.{key}` needs a `name` key naming the '
                              f'component to build')
        overlay = dict(value)
        sub = overlay.pop('name')
        return create(sub, cfg.with_section(sub, overlay))
    return value


def load_config(path):
    from .config import load_config as _load
    return _load(path)


def merge_config(overrides, cfg=None):
    """Merge overrides (``['a.b=1']`` or a nested dict) into ``cfg`` (default: current)."""
    from .config import current_config, merge_overrides
    return merge_overrides(current_config() if cfg is None else cfg, overrides)
