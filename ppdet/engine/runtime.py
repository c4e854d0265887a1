"""``model.predict`` through the fastest exact engine on this machine.

:func:`build_runtime` returns a callable ``(image, im_shape, scale_factor) -> output dict``
that stands in for ``model.predict``: the same inputs, the same keys, shapes and dtypes
(see docs/architecture.md). The engine is the config's ``inference_engine``:

* ``eager``: ``model.predict`` itself (:class:`~ppdet.engine.predictor.EagerDetector`);
* ``paddle``: the exported program in Paddle Inference with oneDNN kernels;
* ``onnx``: the exported program converted to ONNX, in onnxruntime;
* ``auto`` (default): the first of ``onnx``, ``paddle``, ``eager`` whose packages are
  installed. onnxruntime was the fastest float32 engine on every CPU measured (AMD Zen 2 and
  Zen 5, Intel Xeon with AMX; ``benchmarks/bench_infer.py``); all three agree within float32
  round-off.

The exported engines are built on first use with :func:`ppdet.engine.export.export_model`
and cached beside the weights (``model_final.pdparams`` -> ``model_final.inference/``). The
cache is reused while the weights file, the config's model sections, the model code, the
paddle / paddle2onnx / onnxruntime versions and the CPU are unchanged, and rebuilt otherwise
(onnxruntime's optimised graph is specific to the CPU's vector width). Where it
cannot be written the program is built in a temporary folder; where it cannot be built at all
the next engine of ``auto`` runs, and in the end the model eager. Each fallback logs one line.
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
from ppdet.utils.checkpoint import weights_path
from ppdet.utils.cpuinfo import cpu_flags, cpu_model

from .env import cpu_threads
from .export import MODEL_FILE, ONNX_FILE, OUTPUT_NAMES, PARAMS_FILE, export_model
from .predictor import EagerDetector

__all__ = ['ENGINES', 'RUNTIME_OUTPUTS', 'build_runtime', 'resolve_engine',
           'PaddleInferenceRuntime', 'OnnxRuntime', 'ProgramCache', 'model_sections']

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


def resolve_engine(engine):
    """The engines to try for ``engine``, in order: for ``auto`` every installed one, fastest
    first; otherwise the one named (a ConfigError when its packages are missing)."""
    if engine not in ENGINES:
        raise ConfigError(f'inference_engine must be one of {", ".join(ENGINES)}, '
                          f'got {engine!r}')
    if engine == 'auto':
        return [e for e in AUTO_ORDER if _installed(e)]
    if not _installed(engine):
        raise ConfigError(f'inference_engine {engine} needs paddle2onnx and onnxruntime: '
                          'pip install -r requirements-export.txt')
    return [engine]


# --------------------------------------------------------------------------- runtimes

def _numpy(x):
    return np.ascontiguousarray(x.numpy() if isinstance(x, paddle.Tensor) else x, np.float32)


def _as_outputs(arrays):
    """The program's outputs (``RUNTIME_OUTPUTS`` order) as model.predict's dict: tensors,
    without the spare row."""
    out = dict(zip(RUNTIME_OUTPUTS, arrays))
    count = int(out['bbox_num'].sum())
    for key in PER_DETECTION:
        out[key] = out[key][:count]
    return {key: paddle.to_tensor(value) for key, value in out.items()}


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
    # the arena keeps (and grows) what the largest run needed; without it the peak RSS
    # at 800x1216 is a quarter lower, at the same speed
    options.enable_cpu_mem_arena = False
    return options


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


def _program_folder(model, cfg, engine, weights, cache_dir):
    """The folder of the exported program for ``engine``, built if needed."""
    weights_file = weights_path(weights) + '.pdparams' if weights else None
    if weights_file and not os.path.isfile(weights_file):
        weights_file = None
    if cache_dir is None and weights_file is None:     # nothing to key a cache on
        return _build_program(model, cfg, engine, _temporary_folder())
    cache = ProgramCache(cache_dir) if cache_dir else ProgramCache.beside(weights_file)
    expected = fingerprint(cfg, weights_file, engine)
    folder = cache.lookup(engine, expected)
    if folder:
        logger.info(f'inference engine {engine}: reusing {folder}')
        return folder
    try:
        folder = cache.store(engine, expected,
                             functools.partial(_build_program, model, cfg, engine))
    except OSError as e:
        logger.warning(f'{cache.root}: cannot write the inference cache ({e.strerror or e}); '
                       'building the program in a temporary folder')
        return _build_program(model, cfg, engine, _temporary_folder())
    logger.info(f'inference engine {engine}: program built in {folder}')
    return folder


def build_runtime(model, cfg, weights=None, engine=None, threads=None, cache_dir=None):
    """A callable standing in for ``model.predict`` on the configured engine.

    ``weights``: the file the model's weights came from (keys the cache beside it; without it
    the program is built in a temporary folder for this process). ``engine``: default the
    config's ``inference_engine``. ``threads``: default as for eager (``cpu_threads``, else
    ``OMP_NUM_THREADS`` as the user set it, else the usable cores). ``cache_dir``: another
    cache folder than the one beside the weights.
    """
    import ppdet
    threads = threads or cpu_threads(cfg.get('cpu_threads'), ppdet.USER_OMP_NUM_THREADS)
    for name in resolve_engine(engine or cfg.get('inference_engine', 'auto')):
        if name == 'eager':
            break
        try:
            return RUNTIMES[name](_program_folder(model, cfg, name, weights, cache_dir),
                                  threads)
        except (PPDetError, OSError, RuntimeError, ValueError) as e:
            lines = str(e).strip().splitlines()
            logger.warning(f'inference engine {name} unavailable '
                           f'({lines[-1] if lines else type(e).__name__})')
    logger.info('inference engine: eager')
    return EagerDetector(model)
