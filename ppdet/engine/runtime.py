"""``model.predict`` through the fastest exact engine on this machine.

:func:`build_runtime` returns a callable ``(image, im_shape, scale_factor) -> output dict``
that stands in for ``model.predict``: the same inputs, the same keys, shapes and dtypes
(numpy arrays from the exported engines; see docs/architecture.md). The engine is the config's
``inference_engine``:

* ``eager``: ``model.predict`` itself (:class:`~ppdet.engine.predictor.EagerDetector`);
* ``paddle``: the exported program in Paddle Inference with oneDNN kernels;
* ``onnx``: the exported program converted to ONNX, in onnxruntime;
* ``auto`` (default): the first of ``onnx``, ``paddle``, ``eager`` whose packages are
  installed. onnxruntime was the fastest float32 engine on every CPU measured (AMD Zen 2 and
  Zen 5, Intel Xeon with AMX; ``benchmarks/bench_infer.py``); all three agree within float32
  round-off. On a GPU ``auto`` is ``eager`` (the exported engines run on the CPU).

The exported engines are built on first use with :func:`ppdet.engine.export.export_model`
and cached beside the weights (``model_final.pdparams`` -> ``model_final.inference/``). The
cache is reused while the weights file, the config's model sections, the model code, the
paddle / paddle2onnx / onnxruntime versions and the CPU are unchanged, and rebuilt otherwise
(onnxruntime's optimised graph is specific to the CPU's vector width). Where it
cannot be written the program is built in a temporary folder; where it cannot be built at all
the next engine of ``auto`` runs, and in the end the model eager. Each fallback logs one line,
and one line names the engine that runs.

Given ``load_weights``, :func:`build_runtime` puts the weights into the model only when the
model itself is needed (a program the cache does not hold, or eager), so a cached program
runs without them; :func:`release_parameters` frees them once an exported program runs.
"""
import atexit
import dataclasses
import functools
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

from ppdet.core.config import config_check
from ppdet.core.errors import ConfigError, PPDetError
from ppdet.core.workspace import REGISTRY, get_schema
from ppdet.utils.checkpoint import params_file, weights_path
from ppdet.utils.cpuinfo import cpu_flags, cpu_model

from .env import cpu_threads
from .export import MODEL_FILE, ONNX_FILE, OUTPUT_NAMES, PARAMS_FILE, export_model
from .predictor import EagerDetector

__all__ = ['ENGINES', 'RUNTIME_OUTPUTS', 'build_runtime', 'resolve_engine',
           'release_parameters', 'PaddleInferenceRuntime', 'OnnxRuntime', 'ProgramCache',
           'model_sections']

logger = logging.getLogger('ppdet')

ENGINES = ('auto', 'eager', 'paddle', 'onnx')
AUTO_ORDER = ('onnx', 'paddle', 'eager')
# what model.predict returns; the exported program adds one spare row to the first four
RUNTIME_OUTPUTS = OUTPUT_NAMES + ('num_above_score', 'num_candidates')
PER_DETECTION = ('segm', 'cate_label', 'cate_score', 'bbox')
BUILD_FILE = 'build.json'
OPTIMISED_ONNX = 'model.optimised.onnx'
CACHE_FORMAT = 2
PACKAGES = {'paddle': ('paddlepaddle',), 'onnx': ('paddle2onnx', 'onnxruntime')}
MODEL_CODE = ('modeling/**/*.py', 'engine/export.py')


@config_check
def _check_engine(cfg):
    value = cfg.get('inference_engine', 'auto')
    if value not in ENGINES:
        raise ConfigError(f'{cfg.source_of("inference_engine") or "config"}: inference_engine '
                          f'must be one of {", ".join(ENGINES)}, got {value!r}')


def _installed(engine):
    modules = {'eager': (), 'paddle': ('paddle.inference',),
               'onnx': ('paddle2onnx', 'onnxruntime')}[engine]
    return all(importlib.util.find_spec(m) is not None for m in modules)


def resolve_engine(engine, device='cpu'):
    """The engines to try for ``engine``, in order: for ``auto`` every installed one, fastest
    first (on a GPU ``device``, eager only); otherwise the one named (a ConfigError when its
    packages are missing)."""
    if engine not in ENGINES:
        raise ConfigError(f'inference_engine must be one of {", ".join(ENGINES)}, '
                          f'got {engine!r}')
    if engine == 'auto':
        return [e for e in AUTO_ORDER if _installed(e) and (device == 'cpu' or e == 'eager')]
    if not _installed(engine):
        needs = {'paddle': 'a paddlepaddle build with paddle.inference',
                 'onnx': 'paddle2onnx and onnxruntime: pip install -r requirements-export.txt'}
        raise ConfigError(f'inference_engine {engine} needs {needs[engine]}')
    return [engine]


# --------------------------------------------------------------------------- runtimes

def _numpy(x):
    return np.ascontiguousarray(x.numpy() if isinstance(x, paddle.Tensor) else x, np.float32)


def _as_outputs(arrays):
    """The program's outputs (``RUNTIME_OUTPUTS`` order) as model.predict's dict of arrays,
    without the spare row (views: the full-size masks are not copied)."""
    out = dict(zip(RUNTIME_OUTPUTS, arrays))
    count = int(out['bbox_num'].sum())
    for key in PER_DETECTION:
        out[key] = out[key][:count]
    return out


class PaddleInferenceRuntime:
    """The exported program in Paddle Inference, oneDNN kernels, float32."""
    engine = 'paddle'

    def __init__(self, folder, threads):
        import paddle.inference as pi
        config = pi.Config(os.path.join(folder, MODEL_FILE), os.path.join(folder, PARAMS_FILE))
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        config.enable_onednn()
        config.set_onednn_cache_capacity(10)
        # paddle 3.3.1: with oneDNN kernels the in-place pass corrupts results
        config.delete_pass('inplace_pass')
        config.switch_ir_optim(True)
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)

    def __call__(self, image, im_shape, scale_factor):
        feeds = dict(zip(('image', 'im_shape', 'scale_factor'),
                         map(_numpy, (image, im_shape, scale_factor))))
        for name in self.predictor.get_input_names():
            self.predictor.get_input_handle(name).copy_from_cpu(feeds[name])
        self.predictor.run()
        return _as_outputs([self.predictor.get_output_handle(n).copy_to_cpu()
                            for n in self.predictor.get_output_names()])


class OnnxRuntime:
    """The exported program converted to ONNX, in onnxruntime (CPU).

    The cache holds the graph as onnxruntime optimised it for this CPU (layouts for its vector
    width, batch norms folded): loading it unoptimised again takes half the memory of
    optimising at every start, at the same speed.
    """
    engine = 'onnx'

    def __init__(self, folder, threads):
        import onnxruntime as ort
        options = _session_options(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(os.path.join(folder, OPTIMISED_ONNX), options,
                                            providers=['CPUExecutionProvider'])

    @staticmethod
    def optimise(folder):
        """``model.onnx`` -> the optimised graph for this CPU (which replaces it)."""
        import onnxruntime as ort
        options = _session_options(1)
        options.optimized_model_filepath = os.path.join(folder, OPTIMISED_ONNX)
        ort.InferenceSession(os.path.join(folder, ONNX_FILE), options,
                             providers=['CPUExecutionProvider'])
        os.remove(os.path.join(folder, ONNX_FILE))

    def __call__(self, image, im_shape, scale_factor):
        feeds = dict(zip(('image', 'im_shape', 'scale_factor'),
                         map(_numpy, (image, im_shape, scale_factor))))
        return _as_outputs(self.session.run(None, feeds))


def _session_options(threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3      # no warning per unused initializer
    _register_arena()
    options.add_session_config_entry('session.use_env_allocators', '1')
    return options


@functools.lru_cache(maxsize=None)
def _register_arena():
    """One CPU arena for the sessions of this process that grows by what is asked.

    onnxruntime's own arena grows in powers of two; without an arena, malloc's heap fragments
    over a run. This one reuses freed blocks: for the r50 model at 512x512 the peak RSS is
    0.1 GB lower than without an arena, at 800x1216 0.06 GB, and first runs are faster.
    """
    import onnxruntime as ort
    ort.create_and_register_allocator(
        ort.OrtMemoryInfo('Cpu', ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                          ort.OrtMemType.DEFAULT),
        ort.OrtArenaCfg(0, 1, -1, -1))     # no limit, kSameAsRequested, default chunk sizes


RUNTIMES = {'paddle': PaddleInferenceRuntime, 'onnx': OnnxRuntime}


# --------------------------------------------------------------------------- cache

def model_sections(cfg):
    """The config entries that define the network and its post-processing: the
    architecture's section, every component it names (recursively, including injected
    defaults) and the shared top-level keys they read."""
    found, todo = {'architecture': cfg.get('architecture')}, [cfg.get('architecture')]
    while todo:
        name = todo.pop()
        if name in found or name not in REGISTRY:
            continue
        section = cfg.get(name) if isinstance(cfg.get(name), dict) else {}
        found[name] = section
        schema = get_schema(REGISTRY[name])
        for key in schema.shared:
            if key in cfg:
                found[key] = cfg[key]
        values = list(section.values()) + [schema.defaults.get(k) for k in schema.inject]
        for value in values:
            sub = value.get('name') if isinstance(value, dict) else value
            if isinstance(sub, str):
                todo.append(sub)
    return found


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _code_digest():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for pattern in MODEL_CODE:
        for path in sorted(glob.glob(os.path.join(root, pattern), recursive=True)):
            digest.update(os.path.relpath(path, root).encode())
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def _versions(engine):
    found = {}
    for package in PACKAGES.get(engine, ()) + ('paddlepaddle',):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def fingerprint(cfg, weights_file, engine):
    """What the cached program was built from; any change means a rebuild."""
    sections = json.dumps(model_sections(cfg), sort_keys=True, default=repr)
    return {'format': CACHE_FORMAT, 'engine': engine,
            'cpu': f'{cpu_model()}, flags ' + _digest(' '.join(sorted(cpu_flags())))[:16],
            'weights': _sha256_file(weights_file) if weights_file else None,
            'model_sections': _digest(sections),
            'model_code': _code_digest(), 'versions': _versions(engine)}


def _read_json(path):
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class ProgramCache:
    """Where the exported program of one engine lives: ``<root>/<engine>/``."""
    root: str

    @classmethod
    def beside(cls, weights):
        return cls(weights_path(weights) + '.inference')

    def folder(self, engine):
        return os.path.join(self.root, engine)

    def remove(self):
        """Delete the cached programs of every engine."""
        shutil.rmtree(self.root, ignore_errors=True)

    def lookup(self, engine, expected):
        """The folder when it holds a program built from ``expected``, else None."""
        folder = self.folder(engine)
        return folder if _read_json(os.path.join(folder, BUILD_FILE)) == expected else None

    def store(self, engine, expected, build):
        """Build into a fresh folder next to the cache's, then swap it in (so a concurrent
        reader never sees half a program). Raises OSError when the root is not writable."""
        os.makedirs(self.root, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f'.{engine}-', dir=self.root)
        try:
            build(staging)
            with open(os.path.join(staging, BUILD_FILE), 'w', encoding='utf-8') as f:
                json.dump(expected, f, indent=1)
            target, stale = self.folder(engine), staging + '.stale'
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)       # mkdtemp made it private
            if os.path.isdir(target):
                os.rename(target, stale)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(stale, ignore_errors=True)
        return target


def _build_program(model, cfg, engine, folder):
    export_model(model, cfg, folder, onnx=engine == 'onnx', outputs=RUNTIME_OUTPUTS)
    if engine == 'onnx':            # the ONNX graph holds the weights
        for name in (MODEL_FILE, PARAMS_FILE):
            os.remove(os.path.join(folder, name))
        OnnxRuntime.optimise(folder)
    return folder


def _temporary_folder():
    folder = tempfile.mkdtemp(prefix='ppdet-inference-')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _weights_file(weights):
    """The local ``.pdparams`` file of ``weights`` (an address: its downloaded copy), None
    for none or a missing file."""
    if not weights:
        return None
    try:
        return params_file(weights)
    except PPDetError:
        return None


def _cached_program(cfg, engine, weights_file, cache_dir):
    """``(cache, build record, folder)``: the folder is the cached program for ``engine``
    when one was built from what is there now, else None. Nothing to key a cache on (no
    weights file, no ``cache_dir``): ``(None, None, None)``."""
    if cache_dir is None and weights_file is None:
        return None, None, None
    cache = ProgramCache(cache_dir) if cache_dir else ProgramCache.beside(weights_file)
    expected = fingerprint(cfg, weights_file, engine)
    return cache, expected, cache.lookup(engine, expected)


def _new_program(model, cfg, engine, cache, expected):
    """Export ``model`` for ``engine`` into ``cache`` (a temporary folder without one, or
    where the cache cannot be written)."""
    if cache is not None:
        try:
            return cache.store(engine, expected,
                               functools.partial(_build_program, model, cfg, engine))
        except OSError as e:
            logger.warning(f'{cache.root}: cannot write the inference cache '
                           f'({e.strerror or e}); building the program in a temporary folder')
    return _build_program(model, cfg, engine, _temporary_folder())


def build_runtime(model, cfg, weights=None, engine=None, threads=None, cache_dir=None,
                  load_weights=None, amp=None):
    """A callable standing in for ``model.predict`` on the configured engine.

    ``weights``: the file (or address) the model's weights come from; it keys the cache
    beside it (without it the program is built in a temporary folder for this process).
    ``engine``: default the config's ``inference_engine``. ``threads``: default as for eager
    (``cpu_threads``, else ``OMP_NUM_THREADS`` as the user set it, else the usable cores).
    ``cache_dir``: another cache folder than the one beside the weights. ``load_weights``:
    when the model does not hold the weights yet, a callable that loads them, called only if
    the model is needed. ``amp``: the AMP settings of an eager run.
    """
    import ppdet
    threads = threads or cpu_threads(cfg.get('cpu_threads'), ppdet.USER_OMP_NUM_THREADS)
    device = 'cpu' if paddle.get_device() == 'cpu' else 'gpu'
    weights_file = _weights_file(weights)

    def loaded_model():
        nonlocal load_weights
        if load_weights is not None:
            load, load_weights = load_weights, None
            load()
        return model

    for name in resolve_engine(engine or cfg.get('inference_engine', 'auto'), device):
        if name == 'eager':
            break
        cache, expected, folder = _cached_program(cfg, name, weights_file, cache_dir)
        how = 'reused from'
        if not folder:
            loaded_model()          # a weights file that does not fit stops here, in one line
            how = 'built in'
        try:
            folder = folder or _new_program(model, cfg, name, cache, expected)
            runtime = RUNTIMES[name](folder, threads)
        except (PPDetError, OSError, RuntimeError, ValueError) as e:
            lines = str(e).strip().splitlines()
            logger.warning(f'inference engine {name} unavailable '
                           f'({lines[-1] if lines else type(e).__name__})')
            continue
        logger.info(f'inference engine: {name} on {threads} CPU threads, program {how} '
                    f'{folder}')
        return runtime
    logger.info('inference engine: eager')
    return EagerDetector(loaded_model(), amp)


def release_parameters(model):
    """Free the memory of ``model``'s parameters and buffers (an exported program holds its
    own copy); the model cannot run afterwards."""
    for tensor in model.state_dict().values():
        if tensor._is_initialized():
            tensor._clear_data()
