"""The native Q4_1 AMX kernel (engine/cpu_native.py, engine/native/q4_1_amx.c) and its fallbacks.

Kernel tests build the real library with the system compiler and skip, with the reason, on a
CPU without AMX; the fallback tests run everywhere.
"""
from __future__ import annotations

import errno
import logging
import os

import pytest
import torch

from trtllm_service.engine import cpu_native
from trtllm_service.engine.cpu_int4 import Int4DecodeLinear
from trtllm_service.engine.cpu_native import GROUP, load_kernel, pack_q4_1


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    reason = cpu_native._unsupported()
    if reason is not None:
        pytest.skip(f"native kernel cannot run here: {reason}")
    loaded = load_kernel(tmp_path_factory.mktemp("kernels"))
    assert loaded is not None, "the CPU has AMX and a compiler, so the kernel must build and pass its self-test"
    return loaded


def q4_1_weights(n: int, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k // GROUP, GROUP), generator=gen, dtype=torch.uint8)
    d = (torch.rand(n, k // GROUP, generator=gen) * 0.02 + 1e-3).half()
    m = (-torch.rand(n, k // GROUP, generator=gen) * 0.1).half()
    dense = (q.float() * d.float()[..., None] + m.float()[..., None]).reshape(n, k)
    return q, d, m, dense


@pytest.mark.parametrize("n,k", [(16, 32), (48, 96), (192, 576), (576, 1536)])
@pytest.mark.parametrize("rows", [1, 5, 8, 16, 17, 40])
def test_kernel_equals_bf16_matmul_of_the_dequantized_weights(kernel, n, k, rows):
    q, d, m, dense = q4_1_weights(n, k)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    got = kernel.mm(x, pack_q4_1(q, d, m)).float()
    # The kernel multiplies the same bf16 weights a dense copy holds, accumulating in fp32.
    want = x.float() @ dense.to(torch.bfloat16).float().t()
    assert got.shape == (rows, n)
    torch.testing.assert_close(got, want, rtol=2 ** -7, atol=2 ** -7 * float(want.abs().max()))


def test_kernel_reuses_its_cached_build(tmp_path, kernel):
    assert load_kernel(tmp_path) is not None
    built = list(tmp_path.glob("q4_1_amx-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert load_kernel(tmp_path) is not None
    assert built[0].stat().st_mtime_ns == stamp, "the second load must reuse the build"


def test_int4_linear_picks_kernel_by_row_count(kernel, monkeypatch):
    n, k = 48, 96
    q, d, m, dense = q4_1_weights(n, k)
    linear = torch.nn.Linear(k, n, bias=False).to(torch.bfloat16)
    linear.weight.data = dense.to(torch.bfloat16)
    packed = torch._convert_weight_to_int4pack_for_cpu(q.reshape(n, k).to(torch.int32).contiguous(), 1)
    scales = torch.stack([d.float().t(), (m.float() + 8 * d.float()).t()], -1).to(torch.bfloat16).contiguous()
    layer = Int4DecodeLinear(linear, packed, scales, (kernel, pack_q4_1(q, d, m)))
    calls = []
    monkeypatch.setattr(type(kernel), "mm", lambda self, x, w, real=type(kernel).mm: calls.append(len(x)) or real(self, x, w))
    for rows in (1, cpu_native.TORCH_MAX_ROWS, cpu_native.TORCH_MAX_ROWS + 1, 64):
        x = torch.randn(1, rows, k).to(torch.bfloat16)
        out = layer(x)
        want = torch.nn.functional.linear(x.float(), dense.to(torch.bfloat16).float())
        torch.testing.assert_close(out.float(), want, rtol=2 ** -6, atol=2 ** -6 * float(want.abs().max()))
    assert calls == [cpu_native.TORCH_MAX_ROWS + 1, 64]
    assert layer.weight is None, "with the native kernel the dense bf16 copy is not kept"
    x = torch.randn(8, k)  # float32 activations: computed in bf16, returned as float32
    want = torch.nn.functional.linear(x.to(torch.bfloat16).float(), dense.to(torch.bfloat16).float())
    got = layer(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2 ** -6, atol=2 ** -6 * float(want.abs().max()))


def test_pack_rejects_shapes_that_do_not_tile():
    q, d, m, _ = q4_1_weights(16, 32)
    assert pack_q4_1(q[:8], d[:8], m[:8]) is None


def test_no_amx_means_no_kernel_and_a_logged_reason(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cpu_native, "CPU_FLAGS", ("not_a_real_cpu_flag",))
    with caplog.at_level(logging.INFO, logger=cpu_native.__name__):
        assert load_kernel(tmp_path) is None
    assert "not_a_real_cpu_flag" in caplog.text
    assert not list(tmp_path.iterdir()), "nothing is built when the CPU cannot run it"


def test_failed_build_means_no_kernel(monkeypatch, tmp_path, caplog):
    if cpu_native._unsupported() is not None:
        pytest.skip("the build is only attempted on a CPU with AMX")
    monkeypatch.setattr(cpu_native, "CFLAGS", ("-this-flag-does-not-exist",))
    with caplog.at_level(logging.INFO, logger=cpu_native.__name__):
        assert load_kernel(tmp_path) is None
    assert "failed" in caplog.text
    assert not list(tmp_path.glob("*.so")), "a failed build leaves no library behind"


def test_missing_compiler_means_no_kernel(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_native, "_compiler", lambda: None)
    monkeypatch.setattr(cpu_native, "CPU_FLAGS", ())
    assert load_kernel(tmp_path) is None


def test_unwritable_cache_falls_back_to_the_temp_dir(monkeypatch, tmp_path):
    if cpu_native._unsupported() is not None:
        pytest.skip("the build is only attempted on a CPU with AMX")
    if os.geteuid() == 0:  # root writes anywhere: make the first directory refuse instead
        real = cpu_native._build

        def refusing(directory):
            if directory == tmp_path / "ro":  # as in a pod with readOnlyRootFilesystem
                raise OSError(errno.EROFS, f"{directory}: read-only file system")
            return real(directory)
        monkeypatch.setattr(cpu_native, "_build", refusing)
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
    monkeypatch.setattr(cpu_native, "_cache_dirs", lambda: [tmp_path / "ro", tmp_path / "tmp"])
    assert cpu_native.load_kernel() is not None
    assert list((tmp_path / "tmp").glob("q4_1_amx-*.so"))


def test_a_cache_directory_others_can_write_is_not_used(tmp_path, caplog):
    if cpu_native._unsupported() is not None:
        pytest.skip("the build is only attempted on a CPU with AMX")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.INFO, logger=cpu_native.__name__):
        assert load_kernel(shared) is None
    assert "not owned by this user alone" in caplog.text
    assert not list(shared.iterdir())
