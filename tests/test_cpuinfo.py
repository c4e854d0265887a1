"""CPU description and the choice of MKL kernels."""
import os

import pytest

from ppdet.utils import cpuinfo

AVX2 = {'avx', 'avx2', 'fma', 'sse4_2'}
AVX512 = AVX2 | {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl'}


@pytest.mark.parametrize('vendor, flags, expected', [
    ('AuthenticAMD', AVX2, '5'),                      # Zen 2 / 3: AVX2 kernels
    ('AuthenticAMD', AVX512 | {'avx512_bf16'}, '7'),  # Zen 4 / 5: AVX-512 kernels
    ('AuthenticAMD', {'avx512f', 'avx2', 'fma'}, '5'),  # incomplete AVX-512: not chosen
    ('AuthenticAMD', {'avx', 'sse4_2'}, None),        # nothing better than MKL's own pick
    ('GenuineIntel', AVX512, None),                   # MKL picks Intel's kernels itself
])
def test_mkl_kernels_follow_the_instructions_the_cpu_has(vendor, flags, expected):
    assert cpuinfo.mkl_cpu_type(vendor, flags) == expected


def test_the_users_choice_is_kept(monkeypatch):
    monkeypatch.setattr(cpuinfo, 'cpu_vendor', lambda: 'AuthenticAMD')
    monkeypatch.setattr(cpuinfo, 'cpu_flags', lambda: AVX512)
    assert cpuinfo.select_mkl_kernels({'MKL_DEBUG_CPU_TYPE': '5'}) == '5'
    environ = {}
    assert cpuinfo.select_mkl_kernels(environ) == '7' and environ['MKL_DEBUG_CPU_TYPE'] == '7'


@pytest.mark.parametrize('flags, text', [
    (AVX2, 'AVX2'), (AVX512, 'AVX-512'), (AVX512 | {'avx512_bf16', 'amx_bf16'}, 'AVX-512 + BF16 + AMX'),
])
def test_vector_extensions_are_named(flags, text):
    assert cpuinfo.vector_extensions(flags) == text


def test_importing_ppdet_selected_the_kernels():
    import ppdet
    assert ppdet.MKL_CPU_TYPE == os.environ.get('MKL_DEBUG_CPU_TYPE')
    if ppdet.MKL_CPU_TYPE is None:
        assert cpuinfo.mkl_cpu_type(cpuinfo.cpu_vendor(), cpuinfo.cpu_flags()) is None
