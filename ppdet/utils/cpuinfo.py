"""What this CPU is (model, vector extensions) and which MKL kernels to run on it.

Paddle's CPU wheel does its matrix products and convolutions with Intel MKL 2019, which picks
its fastest kernels only on Intel CPUs: on AMD it runs a generic path at a third to a half of
the speed the core allows. ``MKL_DEBUG_CPU_TYPE`` (honoured by that MKL release) names the
kernels to use instead; it must be set before MKL's first call, and is chosen here from the
instructions the CPU reports, so a kernel the CPU cannot run is never selected.
"""
import os
import platform

__all__ = ['cpu_model', 'cpu_flags', 'vector_extensions', 'describe_cpu', 'mkl_cpu_type',
           'select_mkl_kernels']

_AVX512 = {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}
_AVX2 = {'avx2', 'fma'}
# MKL_DEBUG_CPU_TYPE values of MKL 2019: 5 = AVX2 kernels, 7 = AVX-512 (Skylake-SP) kernels
_MKL_TYPES = ((_AVX512, '7'), (_AVX2, '5'))


def _cpuinfo_fields():
    """The first processor's ``key: value`` lines of /proc/cpuinfo; empty where absent."""
    fields = {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(':')
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model():
    return _cpuinfo_fields().get('model name') or platform.processor() or 'unknown CPU'


def cpu_vendor():
    return _cpuinfo_fields().get('vendor_id', '')


def cpu_flags():
    return set(_cpuinfo_fields().get('flags', '').split())


def vector_extensions(flags=None):
    """The widest vector instructions, e.g. ``AVX2``, ``AVX-512 + BF16`` or ``AVX-512 + AMX``."""
    flags = cpu_flags() if flags is None else flags
    if _AVX512 <= flags:
        extras = [name for flag, name in (('avx512_bf16', 'BF16'), ('amx_bf16', 'AMX'))
                  if flag in flags]
        return ' + '.join(['AVX-512'] + extras)
    if _AVX2 <= flags:
        return 'AVX2'
    return 'AVX' if 'avx' in flags else 'SSE'


def describe_cpu(threads=None):
    """One line naming the machine, for logs and benchmark tables."""
    text = f'{cpu_model()} ({vector_extensions()})'
    return f'{text}, {threads} thread{"s" * (threads != 1)}' if threads else text


def mkl_cpu_type(vendor, flags):
    """The ``MKL_DEBUG_CPU_TYPE`` for a CPU, or None where MKL chooses well by itself."""
    if vendor == 'GenuineIntel':
        return None
    return next((value for needed, value in _MKL_TYPES if needed <= flags), None)


def select_mkl_kernels(environ=os.environ):
    """Set ``MKL_DEBUG_CPU_TYPE`` for this CPU unless the user set it; returns its value."""
    if 'MKL_DEBUG_CPU_TYPE' not in environ:
        value = mkl_cpu_type(cpu_vendor(), cpu_flags())
        if value is not None:
            environ['MKL_DEBUG_CPU_TYPE'] = value
    return environ.get('MKL_DEBUG_CPU_TYPE')
