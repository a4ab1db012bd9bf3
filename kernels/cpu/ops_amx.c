/* ops_amx.c -- the packed matrix product for BF16 weights on AMX tiles (tdpbf16ps), x split into two bf16 parts so the result stays near F32's; other weight types go to the AVX-512 packed kernel.
 *
 * Math. y[t][o] = sum_i x[t][i] W[o][i]. Each x is split x = hi + lo with
 * hi = x with its low 16 bits cut (exact in bf16) and lo = bf16(x - hi)
 * (round to nearest even), so |x - hi - lo| <= 2^-17 |x|; products of bf16
 * values are exact and the tiles accumulate in FP32, so
 * y = sum hi W + sum lo W carries about F32's error, not bf16's (2^-9).
 *
 * Tiles (8 registers of 16 rows x 64 bytes): C0..C3 (tmm0-3) hold 16 rows
 * of x by the 64 outputs of a panel in FP32 (16 outputs each); A (tmm4
 * hi, tmm5 lo) holds 16 rows x 32 inputs of x in bf16; B (tmm6, tmm7)
 * holds 32 inputs x 16 outputs in the pair-interleaved form tdpbf16ps
 * wants: B row r = [W[o][2r], W[o][2r+1]] for its 16 outputs o. For each
 * 32 inputs: C_q += A_hi B_q, then C_q += A_lo B_q (q = 0..3), 8 tile
 * products.
 *
 * Layout: ops_pack's panels are read as they are (for each input i, the
 * panel's 64 weights contiguous), so a model packed at one level runs at
 * any other. The B tiles of one block of KC inputs x 64 outputs are built
 * on the fly (two vpermt2w per pair of inputs and 32 outputs) into a
 * 32 KiB scratch that stays in L1, and reused by every row tile of the
 * call. The block's C partial sums wait in a buffer (16 rows x 64 floats
 * per row tile) between blocks.
 *
 * Every row count takes this path, one row (batch-1 decode) too: an A
 * tile is always 16 rows (rows past T are zeros), and each C element is
 * the same sequence of tile products whatever the other rows hold, so a
 * row's result does not depend on how many rows share the product. At
 * one row the call streams each panel once; the build loop prefetches the
 * next block into L2 at the rate it reads this one (the hardware streamer
 * stops at 4 KiB pages), as ops_gemm.c does.
 *
 * The thread's tile config is loaded at the start of each call and
 * released at the end (other kernels may use other configs on the same
 * thread). x's bf16 parts and the C sums live in a per-thread scratch
 * grown as needed and freed when the thread exits. */
#include "ops_int.h"

#ifdef OPS_HAVE_X86
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define P OPS_PANEL
#define KC 256                    /* inputs per block: 256 x 64 bf16 = 32 KiB of B tiles */
#define MC 256                    /* rows per pass: the C sums of a pass are MC x 64 floats */
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

/* The palette-1 tile config: 64 bytes. */
struct tilecfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* ---------------------------------------------------------- per-thread scratch */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;
static __thread void *scratch_p;
static __thread size_t scratch_n;

static void scratch_free(void *p)
{
    free(p);
}

static void scratch_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* n bytes, 64-aligned, owned by this thread (freed at its exit; reused by
 * its next call); NULL when out of memory. */
static void *scratch(size_t n)
{
    if (n <= scratch_n)
        return scratch_p;
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok)
        return NULL;
    n = (n + 65535) & ~(size_t)65535;
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0)
        return NULL;
    if (pthread_setspecific(scratch_key, p) != 0) {
        free(p);
        return NULL;
    }
    free(scratch_p);
    scratch_p = p;
    scratch_n = n;
    return p;
}

/* ---------------------------------------------------------- the kernel */

/* hi[t][i], lo[t][i] (bf16, stride ld) for t < T16, i < ld: x's two parts,
 * zeros past T rows and I inputs. */
AMX static void split_rows(uint16_t *hi, uint16_t *lo, size_t ld, const float *x, int T, int T16, int I)
{
    const __m512i cut = _mm512_set1_epi32((int)0xffff0000u);
    for (int t = 0; t < T16; t++) {
        uint16_t *h = hi + (size_t)t * ld, *l = lo + (size_t)t * ld;
        if (t >= T) {
            memset(h, 0, ld * 2);
            memset(l, 0, ld * 2);
            continue;
        }
        const float *xr = x + (size_t)t * I;
        for (size_t i = 0; i < ld; i += 32) {
            int n = I - (int)i < 0 ? 0 : I - (int)i;
            __mmask16 ma = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
            __mmask16 mb = n >= 32 ? 0xffff : n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1);
            __m512 x0 = _mm512_maskz_loadu_ps(ma, xr + i), x1 = _mm512_maskz_loadu_ps(mb, xr + i + 16);
            __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x0), cut));
            __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x1), cut));
            _mm512_store_si512((void *)(h + i), (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
            _mm512_store_si512((void *)(l + i), (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1),
                                                                             _mm512_sub_ps(x0, h0)));
        }
    }
}

/* The B tiles of inputs [k0, k0 + kn) of a panel (kn <= KC; the block is
 * rounded up to 32 inputs, zeros past kn): tile (s, q) (32 inputs from
 * k0 + 32 s, outputs 16 q ..) at b + (4 s + q) * 512 bf16, row r =
 * [W[o][k0 + 32 s + 2 r], W[o][k0 + 32 s + 2 r + 1]] for its 16 o. pf: the
 * next block to pull into L2 as this one is read (or NULL). */
AMX static void build_b(uint16_t *b, const uint16_t *blk, int kn, const char *pf)
{
    const __m512i lo16 = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38,
                                          6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi16 = _mm512_add_epi16(lo16, _mm512_set1_epi16(16));
    const __m512i z = _mm512_setzero_si512();
    int kr = (kn + 31) & ~31;
    for (int k = 0; k < kr; k += 2) {
        __m512i a0 = z, a1 = z, b0 = z, b1 = z;
        if (k < kn) {
            a0 = _mm512_loadu_si512(blk + (size_t)k * P);
            a1 = _mm512_loadu_si512(blk + (size_t)k * P + 32);
        }
        if (k + 1 < kn) {
            b0 = _mm512_loadu_si512(blk + (size_t)(k + 1) * P);
            b1 = _mm512_loadu_si512(blk + (size_t)(k + 1) * P + 32);
        }
        if (pf) {
            const char *q = pf + (size_t)k * P * 2;
            _mm_prefetch(q, _MM_HINT_T1);
            _mm_prefetch(q + 64, _MM_HINT_T1);
            _mm_prefetch(q + 128, _MM_HINT_T1);
            _mm_prefetch(q + 192, _MM_HINT_T1);
        }
        uint16_t *d = b + (size_t)(k / 32) * 4 * 512 + (size_t)(k % 32 / 2) * 32;
        _mm512_store_si512((void *)d, _mm512_permutex2var_epi16(a0, lo16, b0));
        _mm512_store_si512((void *)(d + 512), _mm512_permutex2var_epi16(a0, hi16, b0));
        _mm512_store_si512((void *)(d + 1024), _mm512_permutex2var_epi16(a1, lo16, b1));
        _mm512_store_si512((void *)(d + 1536), _mm512_permutex2var_epi16(a1, hi16, b1));
    }
}

/* c[16][64] (stride 64 floats) (+)= rows of hi/lo (stride ld bf16) by the
 * block's B tiles, over kr inputs (a multiple of 32); from zero when first. */
AMX static void row_tile(float *c, const uint16_t *hi, const uint16_t *lo, size_t ld, const uint16_t *b, int kr,
                         bool first)
{
    if (first) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, c, P * 4);
        _tile_loadd(1, c + 16, P * 4);
        _tile_loadd(2, c + 32, P * 4);
        _tile_loadd(3, c + 48, P * 4);
    }
    for (int k = 0; k < kr; k += 32, b += 4 * 512) {
        _tile_loadd(4, hi + k, ld * 2);
        _tile_loadd(5, lo + k, ld * 2);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(0, 5, 6);
        _tile_loadd(7, b + 512, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(1, 5, 7);
        _tile_loadd(6, b + 1024, 64);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(7, b + 1536, 64);
        _tile_dpbf16ps(3, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, P * 4);
    _tile_stored(1, c + 16, P * 4);
    _tile_stored(2, c + 32, P * 4);
    _tile_stored(3, c + 48, P * 4);
}

/* Per pass of up to MC rows (x split once per pass), per panel in
 * [o0, o1), per block of KC inputs: build the block's B tiles, then every
 * row tile of the pass over them; then the store rule on the panel's
 * outputs inside [o0, o1). */
AMX static void amx_bf16(float *y, const float *x, const uint16_t *wp, const float *bias, int T, int I, int O, int o0,
                         int o1, bool accumulate, char *mem, int mc, size_t ld)
{
    uint16_t *b = (uint16_t *)mem;                               /* KC x 64 bf16: 32 KiB */
    float *c = (float *)(mem + (size_t)KC * P * 2);              /* mc x 64 floats */
    uint16_t *hi = (uint16_t *)((char *)c + (size_t)mc * P * 4); /* mc x ld bf16 */
    uint16_t *lo = hi + (size_t)mc * ld;
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int r = 0; r < 8; r++) {
        cfg.rows[r] = 16;
        cfg.colsb[r] = 64;
    }
    _tile_loadconfig(&cfg);
    for (int t0 = 0; t0 < T; t0 += mc) {
        int tn = T - t0 < mc ? T - t0 : mc, t16 = (tn + 15) & ~15;
        split_rows(hi, lo, ld, x + (size_t)t0 * I, tn, t16, I);
        for (int p = o0 / P; p * P < o1; p++) {
            int olo = p * P > o0 ? p * P : o0, ohi = p * P + P < o1 ? p * P + P : o1;
            const uint16_t *panel = wp + (size_t)p * P * I;
            for (int k0 = 0; k0 < I; k0 += KC) {
                int kn = I - k0 < KC ? I - k0 : KC, kr = (kn + 31) & ~31;
                const uint16_t *blk = panel + (size_t)k0 * P;
                const char *next = k0 + KC < I ? (const char *)(blk + (size_t)kn * P)
                                   : (p + 1) * P < o1 ? (const char *)(panel + (size_t)P * I)
                                                         : NULL;
                build_b(b, blk, kn, next);
                for (int r0 = 0; r0 < t16; r0 += 16)
                    row_tile(c + (size_t)r0 * P, hi + (size_t)r0 * ld + k0, lo + (size_t)r0 * ld + k0, ld, b, kr,
                             k0 == 0);
            }
            ops_store_rows_avx512(y + (size_t)t0 * O, c + (olo - p * P), bias, tn, O, olo, ohi - olo, accumulate);
        }
    }
    _tile_release();
}

void ops_matmul_packed_amx(float *y, const float *x, const void *wp, enum ckpt_dtype wt, const float *bias, int T,
                           int I, int O, int o0, int o1, bool accumulate)
{
    if (wt != CKPT_BF16 || T <= 0 || o0 >= o1) {
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    size_t ld = (size_t)(I + 31) & ~(size_t)31;
    /* rows per pass: the pass's bf16 x (4 bytes an input) within ~1 MiB of L2, 16 at least */
    int mc = (int)((1u << 20) / (ld * 4)) & ~15;
    if (mc < 16)
        mc = 16;
    if (mc > MC)
        mc = MC;
    if (mc > ((T + 15) & ~15))
        mc = (T + 15) & ~15;
    char *mem = scratch((size_t)KC * P * 2 + (size_t)mc * P * 4 + (size_t)mc * ld * 4);
    if (!mem) {   /* out of memory: the AVX-512 kernel needs none */
        ops_matmul_packed_avx512(y, x, wp, wt, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    amx_bf16(y, x, wp, bias, T, I, O, o0, o1, accumulate, mem, mc, ld);
}
#else
typedef int ops_amx_none;   /* no x86: nothing here (ISO C wants a declaration) */
#endif /* OPS_HAVE_X86 */
