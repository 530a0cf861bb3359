/* Q4_1 weight x bf16 activation matmul on Intel AMX (the CPU engine's int4 path; see cpu_native.py).

   y[M, N] (bf16) = x[M, K] (bf16, row-major) . W[N, K]^T, where W is stored in GGUF Q4_1 blocks:
   32 consecutive K values of one output n share a scale d and a minimum m (w = d * q + m, q in 0..15).

   Layout (built once at load by cpu_native.pack_q4_1), per block of 16 outputs `nb` and group `g`:
     qs[nb][g][16 rows][16 bytes]: row k2 holds the 32 values of AMX's B tile row k2, i.e. the pairs
       (w[n][2*k2], w[n][2*k2+1]) for n = 0..15 in lane order; byte j carries lane j in its low nibble
       and lane j + 16 in its high nibble, so lanes 0..15 are outputs 0..7 and lanes 16..31 outputs 8..15.
     dm[nb][g][2][16] (fp16): d then m of the 16 outputs.
   A B tile (16 outputs x 32 K) is dequantized to bf16 (d * q + m in fp32, rounded to nearest even, the
   same values a bf16 dense copy of the weights holds), then TDPBF16PS accumulates in fp32. Each thread
   dequantizes its 32 outputs' whole K once into a private buffer and reuses it for every 16-row tile
   of x, so the cost of dequantization does not grow with M.

   Threads: OpenMP over pairs of 16-output blocks, linked against the process's libgomp (torch's), so
   it shares torch's thread pool. AMX needs the process to have asked the kernel for the tile state
   (q41_init). Any build or self-test failure makes the Python side keep torch's kernels. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define BTILE_BYTES 1024 /* 16 rows x 64 bytes */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Ask the kernel for the AMX tile state; 1 on success. */
int q41_init(void) { return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Dequantize one B tile (16 outputs x 32 K) into `out` (16 rows x 32 bf16). */
static inline void dequant_tile(const uint8_t *q, const uint16_t *dm, uint16_t *out) {
    const __m512i lo_idx = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i hi_idx = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    const __m128i mask = _mm_set1_epi8(15);
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dm));
    __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dm + 16)));
    __m512 dl = _mm512_permutexvar_ps(lo_idx, d), dh = _mm512_permutexvar_ps(hi_idx, d);
    __m512 ml = _mm512_permutexvar_ps(lo_idx, m), mh = _mm512_permutexvar_ps(hi_idx, m);
    for (int r = 0; r < 16; r++) {
        __m128i b = _mm_loadu_si128((const __m128i *)(q + r * 16));
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, mask)));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), mask)));
        lo = _mm512_fmadd_ps(lo, dl, ml);
        hi = _mm512_fmadd_ps(hi, dh, mh);
        _mm512_store_si512((void *)(out + r * 32), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

static void write_rows(const float *c, int rows, int N, int n0, uint16_t *y) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < 16; j++) y[(size_t)r * N + n0 + j] = to_bf16(c[r * 16 + j]);
}

static void load_config(int rows) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 5; t++) cfg.colsb[t] = 64; /* tiles 5..7 unused: rows and colsb stay 0 */
    cfg.rows[0] = cfg.rows[4] = rows; /* C tiles of the two output blocks */
    cfg.rows[1] = rows;               /* A: rows of x, 32 K each */
    cfg.rows[2] = cfg.rows[3] = 16;   /* B tiles */
    _tile_loadconfig(&cfg);
}

/* Outputs [n0, n0 + 16 * nblocks), nblocks 1 or 2, for every row of x. `buf` holds G * 2 B tiles. */
static void column_pair(const uint16_t *x, int M, int K, const uint8_t *qs, const uint16_t *dm, int N, int nb,
                        int nblocks, uint16_t *y, uint16_t *buf, int *config_rows) {
    const int G = K / 32;
    float c[16 * 16] __attribute__((aligned(64)));
    for (int b = 0; b < nblocks; b++)
        for (int g = 0; g < G; g++)
            dequant_tile(qs + ((size_t)(nb + b) * G + g) * 256, dm + ((size_t)(nb + b) * G + g) * 32,
                         buf + ((size_t)g * 2 + b) * (BTILE_BYTES / 2));
    __asm__ volatile("" ::: "memory"); /* the tile loads below read what the stores above wrote */
    for (int m0 = 0; m0 < M; m0 += 16) {
        int rows = M - m0 < 16 ? M - m0 : 16;
        if (rows != *config_rows) {
            load_config(rows);
            *config_rows = rows;
        }
        _tile_zero(0);
        _tile_zero(4);
        for (int g = 0; g < G; g++) {
            _tile_loadd(1, x + (size_t)m0 * K + g * 32, K * 2);
            _tile_loadd(2, buf + (size_t)g * 2 * (BTILE_BYTES / 2), 64);
            _tile_dpbf16ps(0, 1, 2);
            if (nblocks == 2) {
                _tile_loadd(3, buf + ((size_t)g * 2 + 1) * (BTILE_BYTES / 2), 64);
                _tile_dpbf16ps(4, 1, 3);
            }
        }
        _tile_stored(0, c, 64);
        __asm__ volatile("" ::: "memory");
        write_rows(c, rows, N, nb * 16, y + (size_t)m0 * N);
        if (nblocks == 2) {
            _tile_stored(4, c, 64);
            __asm__ volatile("" ::: "memory");
            write_rows(c, rows, N, nb * 16 + 16, y + (size_t)m0 * N);
        }
    }
}

/* M <= 16: one tile of x, so each B tile is dequantized right before its use and stays in L1. */
static void column_pair_small(const uint16_t *x, int M, int K, const uint8_t *qs, const uint16_t *dm, int N,
                              int nb, int nblocks, uint16_t *y, int *config_rows) {
    const int G = K / 32;
    uint16_t b[2][BTILE_BYTES / 2] __attribute__((aligned(64)));
    float c[16 * 16] __attribute__((aligned(64)));
    if (M != *config_rows) {
        load_config(M);
        *config_rows = M;
    }
    _tile_zero(0);
    _tile_zero(4);
    for (int g = 0; g < G; g++) {
        for (int i = 0; i < nblocks; i++)
            dequant_tile(qs + ((size_t)(nb + i) * G + g) * 256, dm + ((size_t)(nb + i) * G + g) * 32, b[i]);
        __asm__ volatile("" ::: "memory");
        _tile_loadd(1, x + g * 32, K * 2);
        _tile_loadd(2, b[0], 64);
        _tile_dpbf16ps(0, 1, 2);
        if (nblocks == 2) {
            _tile_loadd(3, b[1], 64);
            _tile_dpbf16ps(4, 1, 3);
        }
    }
    _tile_stored(0, c, 64);
    __asm__ volatile("" ::: "memory");
    write_rows(c, M, N, nb * 16, y);
    if (nblocks == 2) {
        _tile_stored(4, c, 64);
        __asm__ volatile("" ::: "memory");
        write_rows(c, M, N, nb * 16 + 16, y);
    }
}

/* y = x . W^T; K a multiple of 32, N a multiple of 16. Returns 0 on success. */
int q41_mm(const uint16_t *x, int M, int K, const uint8_t *qs, const uint16_t *dm, int N, uint16_t *y,
           int threads) {
    if (M < 1 || K % 32 || N % 16) return 1;
    const int blocks = N / 16, pairs = (blocks + 1) / 2;
    int failed = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(| : failed)
    {
        /* only the many-row path keeps a whole column pair dequantized */
        uint16_t *buf = M > 16 ? aligned_alloc(64, (size_t)(K / 32) * 2 * BTILE_BYTES) : NULL;
        int config_rows = -1;
#pragma omp for schedule(static)
        for (int p = 0; p < pairs; p++) {
            if (M > 16 && buf == NULL) { /* every thread still runs the loop: all must meet a worksharing loop */
                failed = 1;
                continue;
            }
            int nb = 2 * p, nblocks = blocks - nb >= 2 ? 2 : 1;
            if (M <= 16)
                column_pair_small(x, M, K, qs, dm, N, nb, nblocks, y, &config_rows);
            else
                column_pair(x, M, K, qs, dm, N, nb, nblocks, y, buf, &config_rows);
        }
        if (config_rows >= 0) _tile_release();
        free(buf);
    }
    return failed;
}
