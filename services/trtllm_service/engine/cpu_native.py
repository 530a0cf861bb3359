"""Native CPU kernels for the CPU engine: GGUF Q4_1 weights x bf16 activations on Intel AMX.

Why: torch's int4 CPU kernel (`_weight_int4pack_mm_for_cpu`) works row by row, so a decode step
of 8 requests costs ~2.7x one of 1, and prefill chunks fall back to a bf16 GEMM that streams
~210 MB of weights. `native/q4_1_amx.c` dequantizes each 16x32 weight tile once to bf16 (the
exact values a bf16 copy of the weights holds) and multiplies it on the AMX tile unit, so the
cost barely grows with the row count. Measured on this 2-core Sapphire Rapids box, all 210 layer
matmuls of SmolLM2-135M (`scripts/bench_engine.py --kernels` compares them in the engine):

    rows          1      8      16     64     256
    torch int4    5.0    13.3   24.1   -      -      ms
    bf16 GEMM     21.8   21.9   21.9   27.3   51.9   ms
    AMX (this)    9.4    9.5    9.5    15.8   36.8   ms

so the engine uses torch's kernel up to `TORCH_MAX_ROWS` rows and this one above.

Protocol (`load_kernel`): only on Linux x86-64 whose CPU reports amx_tile, amx_bf16,
avx512_bf16 and f16c; the C file is compiled once with the system compiler (`$CC`, else `cc`)
into the cache dir (`--cpu-kernel-cache`, else ~/.cache/trtllm-responses/kernels, else the temp dir
when that is not writable), keyed by a hash of source, flags and compiler; loaded with ctypes (calls
release the GIL); the process asks Linux for the AMX tile state; a self-test compares a small
product with torch. Any failure is logged and returns None: the engine keeps torch's kernels.
The library links the process's libgomp (torch's), so its OpenMP threads are torch's.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "q4_1_amx.c"
CFLAGS = ("-O2", "-march=native", "-mamx-tile", "-mamx-bf16", "-mavx512bf16", "-mf16c", "-fopenmp", "-shared",
          "-fPIC")
CPU_FLAGS = ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "f16c")
GROUP = 32
#: Up to this many rows torch's int4 kernel is faster than the AMX one (see the table above).
TORCH_MAX_ROWS = 4


@dataclass(frozen=True)
class PackedQ41:
    """One weight matrix [n, k] in the kernel's tile layout (see native/q4_1_amx.c)."""

    n: int
    k: int
    qs: torch.Tensor  # uint8 [n/16, k/32, 16, 16]
    dm: torch.Tensor  # float16 [n/16, k/32, 2, 16]
    pointers: tuple[int, int] = (0, 0)  # (qs, dm) data pointers: fixed, read once here, not per call

    def __post_init__(self) -> None:
        object.__setattr__(self, "pointers", (self.qs.data_ptr(), self.dm.data_ptr()))


def pack_q4_1(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> PackedQ41 | None:
    """q: [n, k/32, 32] values 0..15 in K order; d, m: [n, k/32] fp16. None if the shape does not tile."""
    n, groups = d.shape
    if n % 16 or q.shape != (n, groups, GROUP):
        return None
    blocks = n // 16
    # B tile row r, lane j: output j // 2 (lanes 0..15) or 8 + (j - 16) // 2 (lanes 16..31), K = 2r + j % 2.
    tiles = q.to(torch.uint8).reshape(blocks, 16, groups, 16, 2)
    low = tiles[:, :8].permute(0, 2, 3, 1, 4).reshape(blocks, groups, 16, 16)
    high = tiles[:, 8:].permute(0, 2, 3, 1, 4).reshape(blocks, groups, 16, 16)
    scales = [t.to(torch.float16).reshape(blocks, 16, groups).permute(0, 2, 1) for t in (d, m)]
    return PackedQ41(n, groups * GROUP, (low | (high << 4)).contiguous(), torch.stack(scales, 2).contiguous())


class Q41Kernel:
    """The loaded library; `mm` multiplies bf16 rows by one packed matrix."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = lib.q41_mm
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_int, ctypes.c_void_p, ctypes.c_int]

    def mm(self, x: torch.Tensor, w: PackedQ41) -> torch.Tensor:
        """x: bf16 [rows, k], contiguous -> bf16 [rows, n]."""
        rows = x.shape[0]
        out = torch.empty(rows, w.n, dtype=torch.bfloat16)
        qs, dm = w.pointers
        if self._fn(x.data_ptr(), rows, w.k, qs, dm, w.n, out.data_ptr(), torch.get_num_threads()):
            raise RuntimeError("q4_1 AMX kernel failed (out of memory or bad shape)")
        return out


def load_kernel(cache_dir: Path | None = None) -> Q41Kernel | None:
    """Build (once), load and self-test the kernel; None, with the reason logged, where it cannot run."""
    reason = _unsupported()
    if reason is None:
        try:
            lib = ctypes.CDLL(str(_build_somewhere([cache_dir] if cache_dir else _cache_dirs())))
            if lib.q41_init() != 1:
                reason = "Linux refused the AMX tile state"
            else:
                kernel = Q41Kernel(lib)
                reason = _self_test(kernel)
                if reason is None:
                    return kernel
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {str(exc)[-500:]}"
    log.info("native q4_1 kernel not used: %s (torch's int4 kernel and bf16 GEMM instead)", reason)
    return None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trtllm-responses" / "kernels"


def _cache_dirs() -> list[Path]:
    """The user cache, then the temp dir (a read-only home, as in locked-down pods)."""
    return [default_cache_dir(), Path(tempfile.gettempdir()) / f"trtllm-responses-kernels-{os.getuid()}"]


#: A directory we cannot write: read-only filesystem (a pod's readOnlyRootFilesystem), permissions.
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _build_somewhere(dirs: list[Path]) -> Path:
    for i, directory in enumerate(dirs):
        try:
            return _build(directory)
        except OSError as exc:
            if exc.errno not in _UNWRITABLE or i == len(dirs) - 1:
                raise
            log.info("kernel cache %s is not usable (%s); trying %s", directory, exc, dirs[i + 1])
    raise OSError("no kernel cache directory")


def _check_private(directory: Path) -> None:
    """A library found in the cache is loaded into this process: the directory must be ours and
    writable by us alone (the temp-dir fallback has a guessable name another user could take)."""
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(errno.EACCES, f"{directory} is not owned by this user alone")


def _unsupported() -> str | None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"{platform.system()} {platform.machine()} is not Linux x86-64"
    try:
        flags = _cpu_flags()
    except OSError as exc:
        return f"cannot read /proc/cpuinfo: {exc}"
    missing = [f for f in CPU_FLAGS if f not in flags]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    if _compiler() is None:
        return "no C compiler ($CC or cc)"
    return None


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + " " + " ".join(sorted(_cpu_flags()))
    return " ".join(sorted(_cpu_flags()))


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def _build(cache_dir: Path) -> Path:
    """Compile SOURCE into cache_dir unless an identical build is there; atomic against concurrent builds."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    # -march=native: a shared (NFS) home must not hand a build for another CPU to this one
    parts = [SOURCE.read_text(), " ".join(CFLAGS), version, _cpu_model()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    target = cache_dir / f"q4_1_amx-{key}.so"
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(cache_dir)
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    try:
        done = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _self_test(kernel: Q41Kernel) -> str | None:
    """Compare with torch on shapes that exercise one and two column blocks and 1, 16 and 17+ rows."""
    gen = torch.Generator().manual_seed(0)
    n, k = 48, 96
    q = torch.randint(0, 16, (n, k // GROUP, GROUP), generator=gen, dtype=torch.uint8)
    d = (torch.rand(n, k // GROUP, generator=gen) * 0.02).half()
    m = (-torch.rand(n, k // GROUP, generator=gen) * 0.1).half()
    weight = (q.float() * d.float()[..., None] + m.float()[..., None]).reshape(n, k).to(torch.bfloat16)
    packed = pack_q4_1(q, d, m)
    for rows in (1, 16, 37):
        x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
        want = x.float() @ weight.float().t()
        got = kernel.mm(x, packed).float()
        if not torch.allclose(got, want, rtol=2 ** -7, atol=2 ** -7 * float(want.abs().max())):
            return f"self-test mismatch at {rows} rows (max error {float((got - want).abs().max()):.4g})"
    return None
