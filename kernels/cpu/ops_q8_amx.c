/* ops_q8_amx.c -- int8 (Q8_0) matrix products of 5+ rows on AMX tiles (tdpbssd): the weights' Q8_0 blocks, grouped at load (ops_q8_pack_rows), are read in place as A tiles, the activations are packed as B tiles (once per product where the caller prepares them, ops_q8_x_bytes), and the two F16 scales of every block are applied with AVX-512 in the VNNI panel path's order, so the results are its bits.
 *
 * One tile product per 32-input block: A = 16 rows of W (outputs) x 32
 * int8 (a group's block k, loaded with a stride of 64 from its pair's
 * lines: the one copy of the weights the one-row path streams), B = 8 rows x 64
 * bytes (4 inputs of 16 rows of x interleaved: x's packed form, made once
 * per product by ops_q8_amx_prepare_x, or per call by ops_matmul_q8_amx),
 * C = 16 outputs x 16 rows of int32, exact. C goes to memory
 * and per output o: acc[o] = fma(float(C[o]), d_w[o] * d_x, acc[o]) over
 * the 16 rows' lanes, the blocks in order from zero: per (row, output) the
 * same expression in the same order as ops_q8.c's panel path (whose integer
 * dot is exact too), so a row's result does not depend on the rows beside
 * it and equals the VNNI level's (so a call of fewer than AMX_MIN_ROWS
 * rows, where the VNNI panel is faster, gives the same bits). One row
 * (batch-1 decode) and rows wider than AMX_MAX_BLOCKS take the VNNI kernels. */
#include "ops_int.h"

#include <stddef.h>
#include <string.h>

#ifdef OPS_HAVE_AMX
#include <immintrin.h>

#define INL static inline __attribute__((always_inline))
#define AMX __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")))
#define AMX_MAX_BLOCKS 128   /* as the VNNI panel path: I up to 4096 */
#define AMX_MIN_ROWS 5       /* fewer rows: the VNNI panel (same bits), faster there: the tiles' fixed cost per
                                block (store, 16 scalings of 16 lanes) is the same for 2 rows as for 16 */

/* The tile palette for chunks of N rows of x (8 or 16): 0, 1 and 6, 7 C
 * (16 outputs x N int32, two sets, a pair of blocks each); 2, 3 A (16
 * outputs x 32 bytes); 4, 5 B (8 x 4N bytes). */
struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

__attribute__((noinline)) static AMX void amx_config(int N)
{
    struct amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 2; i++) {
        c.rows[i] = c.rows[6 + i] = 16;
        c.colsb[i] = c.colsb[6 + i] = (uint16_t)(4 * N);
        c.rows[2 + i] = 16;
        c.colsb[2 + i] = 32;
        c.rows[4 + i] = 8;
        c.colsb[4 + i] = (uint16_t)(4 * N);
    }
    /* the intrinsic's asm names one byte of c as its input: the barrier
     * keeps the compiler from dropping the other stores */
    __asm__ volatile("" : : "r"(&c) : "memory");
    _tile_loadconfig(&c);
}

static const struct ops_q8_block amx_zero_row[AMX_MAX_BLOCKS];

/* Block k of 8 rows of x (row[t]) as 8 vectors of their dword g, at
 * dst + g * N: an 8 x 8 dword transpose in registers (24 shuffles; 9
 * gathers per block cost 3x as much, a fifth of a product's time at 8 rows). */
INL AMX void transpose8(int32_t *dst, const struct ops_q8_block *const *row, int k, const int N)
{
    __m256i a[8], t[8], u[8];
    for (int i = 0; i < 8; i++)
        a[i] = _mm256_loadu_si256((const __m256i *)row[i][k].q);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(a[i], a[i + 1]);       /* g 0, 1 | 4, 5 of rows i, i + 1 */
        t[i + 1] = _mm256_unpackhi_epi32(a[i], a[i + 1]);   /* g 2, 3 | 6, 7 */
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);       /* g 0 | 4 of rows i .. i + 3 */
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);   /* g 1 | 5 */
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);   /* g 2 | 6 */
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);   /* g 3 | 7 */
    }
    for (int g = 0; g < 4; g++) {
        _mm256_store_si256((__m256i *)(dst + (size_t)g * N), _mm256_permute2x128_si256(u[g], u[g + 4], 0x20));
        _mm256_store_si256((__m256i *)(dst + (size_t)(g + 4) * N), _mm256_permute2x128_si256(u[g], u[g + 4], 0x31));
    }
}

/* x's packed form, a chunk of N rows (8 or 16): per block k, XBLK(N)
 * bytes: the B tile (8 x N int32: dword g of row t's block k at g * N + t,
 * rows past the chunk's zero) then the rows' 16 F32 scales (N = 8: the 8
 * twice, as the scaling below reads them for two outputs at once). A chunk
 * is nb blocks in order; 64-byte aligned, so each block's B is whole lines. */
#define XBLK(N) ((size_t)(32 * (N) + 64))

/* Blocks k0 .. k1 - 1 of x's rows 0 .. n - 1 (n <= N; row stride rs
 * blocks) into the chunk at xc: per block 8 x 8 dword transposes in
 * registers and the 16 scales by one gather. */
INL AMX void pack_blocks(unsigned char *xc, const struct ops_q8_block *X, size_t rs, int k0, int k1, int n,
                         const int N)
{
    __mmask16 m = (__mmask16)((1u << n) - 1);
    __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32((int)(rs * sizeof(struct ops_q8_block))));
    const struct ops_q8_block *row[16];
    for (int t = 0; t < N; t++)
        row[t] = t < n ? X + (size_t)t * rs : amx_zero_row;
    for (int k = k0; k < k1; k++) {
        int32_t *bp = (int32_t *)(xc + (size_t)k * XBLK(N));
        for (int h = 0; h < N; h += 8)
            transpose8(bp + h, row + h, k, N);
        __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx,
                                                                                      (const char *)(X + k), 1)));
        _mm512_store_ps((float *)(bp + 8 * N), N == 16 ? d : _mm512_shuffle_f32x4(d, d, 0x44));
    }
}

/* One block's C (16 outputs x N int32 at c) into acc: per (output, row) the
 * panel path's step, fma(float(C), d_w * d_x, acc). N = 16: acc[o] holds
 * output o's 16 rows; N = 8: acc[j] outputs 2j and 2j + 1, 8 rows each (the
 * C rows are contiguous: one vector), half the instructions. */
INL AMX void scale_block(__m512 *acc, const int32_t *c, const float *dwk, const float *dxk, const int N)
{
    __m512 dxv = _mm512_load_ps(dxk);
    if (N == 16) {
        /* unrolled, so that acc stays in registers (a loop kept it on the
         * stack: a load and a store more per output and block) */
        _Pragma("GCC unroll 16") for (int o = 0; o < 16; o++)
            acc[o] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * o)),
                                     _mm512_mul_ps(_mm512_set1_ps(dwk[o]), dxv), acc[o]);
    } else {
        __m512 dwv = _mm512_load_ps(dwk);
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            __m512i pair = _mm512_set_epi32(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
                                            2 * j + 1, 2 * j + 1, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
                                            2 * j);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * j)),
                                     _mm512_mul_ps(_mm512_permutexvar_ps(pair, dwv), dxv), acc[j]);
        }
    }
}

/* a[o] (output o's 16 rows) into out[t * 16 + o] (row t's 16 outputs): a
 * 16 x 16 transpose in registers, 64 shuffles, where row t's outputs were
 * 16 gathers from out (~5% of a product at 32 rows). Per 128-bit lane L:
 * 4 x 4 transposes (unpack ps, then pd) leave u[4i + j]'s lane L holding
 * column 4L + j of rows 4i .. 4i + 3; two rounds of lane shuffles put
 * those four lanes of column c together. */
INL AMX void transpose16(float *out, const __m512 *a)
{
    __m512 t[16], u[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        __m512 vlo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44), vhi = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xee);
        __m512 wlo = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44), whi = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xee);
        _mm512_store_ps(out + 16 * j, _mm512_shuffle_f32x4(vlo, wlo, 0x88));
        _mm512_store_ps(out + 16 * (4 + j), _mm512_shuffle_f32x4(vlo, wlo, 0xdd));
        _mm512_store_ps(out + 16 * (8 + j), _mm512_shuffle_f32x4(vhi, whi, 0x88));
        _mm512_store_ps(out + 16 * (12 + j), _mm512_shuffle_f32x4(vhi, whi, 0xdd));
    }
}

/* 16 outputs from the group w (ops.h's layout) against a chunk xc of x's
 * packed form: N = 16: out[t * 16 + o] (transpose16), N = 8: out[o * 8 + t].
 * next: the next group (contiguous), prefetched into L1 a share per block
 * pair, so that their stream from memory overlaps this group's tiles and
 * scaling (as the VNNI panel does; past the matrix a prefetch is a no-op).
 * Software-pipelined over two sets of C tiles (0, 1 and 6, 7): pair p's
 * products are issued, pair p - 1's C tiles (issued an iteration ago) are
 * stored, pair p - 2's (stored an iteration ago) scaled, so the scaling
 * runs while the tile unit computes and a pair's products no longer wait
 * for the store of the pair before (4-6% less time at 8 rows, where the
 * scaling is half as long; the same at 16 and 32); the blocks are still
 * scaled in order. */
INL AMX void amx_group(float *out, const unsigned char *w, const unsigned char *xc, const float (*dw)[16], int nb,
                       const char *next, const int N)
{
    size_t share = OPS_Q8G_PAIR_BYTES;
    __m512 acc[16];
    int32_t c[2][2][16 * 16] __attribute__((aligned(64)));
    _Pragma("GCC unroll 16") for (int o = 0; o < 16; o++)
        acc[o] = _mm512_setzero_ps();
    int np = (nb + 1) / 2;
    /* pair p's products into C tiles 0, 1 (p even) or 6, 7 (odd) */
#define AMX_ISSUE(C0, C1)                                                                  \
    do {                                                                                   \
        _tile_zero(C0);                                                                    \
        _tile_loadd(2, w + (size_t)p * OPS_Q8G_PAIR_BYTES, 64);                            \
        _tile_loadd(4, xc + (size_t)k * XBLK(N), 4 * N);                                   \
        _tile_dpbssd(C0, 2, 4);                                                            \
        if (k + 1 < nb) {                                                                  \
            _tile_zero(C1);                                                                \
            _tile_loadd(3, w + (size_t)p * OPS_Q8G_PAIR_BYTES + 32, 64);                   \
            _tile_loadd(5, xc + (size_t)(k + 1) * XBLK(N), 4 * N);                         \
            _tile_dpbssd(C1, 3, 5);                                                        \
        }                                                                                  \
    } while (0)
#define AMX_STORE(C0, C1)                                                                  \
    do {                                                                                   \
        int32_t (*cp)[16 * 16] = c[(p - 1) & 1];                                           \
        _tile_stored(C0, cp[0], 4 * N);                                                    \
        if (k - 1 < nb)                                                                    \
            _tile_stored(C1, cp[1], 4 * N);                                                \
    } while (0)
#define AMX_SCALE()                                                                                                   \
    do {                                                                                                              \
        int j = k - 4;                                                                                                \
        int32_t (*cq)[16 * 16] = c[p & 1];                                                                            \
        scale_block(acc, cq[0], dw[j], (const float *)(xc + (size_t)j * XBLK(N) + 32 * N), N);                       \
        if (j + 1 < nb)                                                                                               \
            scale_block(acc, cq[1], dw[j + 1], (const float *)(xc + (size_t)(j + 1) * XBLK(N) + 32 * N), N);         \
    } while (0)
    for (int p = 0; p <= np + 1; p++) {
        int k = 2 * p;
        /* pair p - 2's C, stored an iteration ago, scaled while the tiles
         * work: at N = 16 before this iteration's tile instructions (2%
         * less time at 32 rows), at N = 8 after them (9% less at 8 rows) */
        if (N == 16 && p > 1)
            AMX_SCALE();
        if (p < np) {
            for (size_t b = 0; next && b < share; b += 64)
                _mm_prefetch(next + (size_t)p * share + b, _MM_HINT_T0);
            if (p & 1)
                AMX_ISSUE(6, 7);
            else
                AMX_ISSUE(0, 1);
        }
        if (p > 0 && p <= np) {   /* pair p - 1's products, issued an iteration ago, to memory */
            if (p & 1)
                AMX_STORE(0, 1);
            else
                AMX_STORE(6, 7);
        }
        if (N == 8 && p > 1)
            AMX_SCALE();
    }
#undef AMX_SCALE
#undef AMX_ISSUE
#undef AMX_STORE
    if (N == 16)
        transpose16(out, acc);
    else
        _Pragma("GCC unroll 8") for (int o = 0; o < 8; o++)
            _mm512_store_ps(out + 16 * o, acc[o]);
}

/* T rows of nb <= AMX_MAX_BLOCKS blocks against outputs o0 .. o1 - 1, x
 * in the packed form (chunks of N rows, nc = ceil(T / N) of them, cs bytes
 * apart): per group of 16 outputs (their scales as F32 once, the pair's
 * scale line's even or odd words; a last group's missing rows are the
 * layout's zero rows), each chunk, the blocks two by two: the group's rows
 * (13 KiB at I = 768) are read from memory for the first chunk and from L1
 * (or L2) for the others; then each row's 16 outputs (a load from out at
 * N = 16, a gather at 8) and the panel path's store rule. The caller
 * configures the tiles. */
INL AMX void amx_span(float *y, const unsigned char *xc, size_t cs, const unsigned char *W, const float *bias, int T,
                      int nb, int O, int o0, int o1, bool accumulate, const int N)
{
    float dw[AMX_MAX_BLOCKS][16] __attribute__((aligned(64)));
    float out[16 * 16] __attribute__((aligned(64)));
    size_t gbytes = (size_t)((nb + 1) / 2) * OPS_Q8G_PAIR_BYTES;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i col = _mm512_mullo_epi32(lane, _mm512_set1_epi32(N));
    int nc = (T + N - 1) / N;
    for (int g = o0 / OPS_Q8G_ROWS; g * OPS_Q8G_ROWS < o1; g++) {
        int o = g * OPS_Q8G_ROWS;
        __mmask16 m = ops_q8g_mask(o, o0, o1);
        const unsigned char *w = W + (size_t)g * gbytes;
        for (int k = 0; k < nb; k++)
            _mm512_store_ps(dw[k], ops_q8g_scales(w, k));
        __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + o) : _mm512_setzero_ps();
        for (int c = 0; c < nc; c++) {
            int tc = c * N, nt = T - tc < N ? T - tc : N;
            amx_group(out, w, xc + (size_t)c * cs, (const float (*)[16])dw, nb,
                      c == 0 ? (const char *)(w + gbytes) : NULL, N);
            for (int t = 0; t < nt; t++) {
                __m512 s = N == 16 ? _mm512_load_ps(out + 16 * t)   /* transposed in amx_group */
                                   : _mm512_i32gather_ps(_mm512_add_epi32(col, _mm512_set1_epi32(t)), out, 4);
                float *yo = y + (size_t)(tc + t) * O + o;
                __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, yo), b) : b;
                _mm512_mask_storeu_ps(yo, m, _mm512_add_ps(v, s));   /* as ops_store1 */
            }
        }
    }
}

/* x as quantized rows: packed here, AMX_PASS chunks of N at a time (a
 * call's tasks each pack it again; the engine prepares it once instead,
 * ops_q8_amx_prepare_x). The tiles are configured per call and released at
 * its end (no AMX state is left live between the engine's products). */
#define AMX_PASS 2   /* chunks of 16 rows a pass */
INL AMX void amx_rows(float *y, const struct ops_q8_block *X, const unsigned char *W, const float *bias, int T,
                      int nb, int O, int o0, int o1, bool accumulate, const int N)
{
    unsigned char xc[AMX_PASS * AMX_MAX_BLOCKS * XBLK(16)] __attribute__((aligned(64)));
    size_t rs = (size_t)nb, cs = (size_t)nb * XBLK(N);
    const int pass = N == 16 ? AMX_PASS : 1;
    amx_config(N);
    for (int tp = 0; tp < T; tp += pass * N) {
        int nt = T - tp < pass * N ? T - tp : pass * N;
        for (int c = 0; c * N < nt; c++) {
            int tc = tp + c * N;
            pack_blocks(xc + (size_t)c * cs, X + (size_t)tc * rs, rs, 0, nb, T - tc < N ? T - tc : N, N);
        }
        amx_span(y + (size_t)tp * O, xc, cs, W, bias, nt, nb, O, o0, o1, accumulate, N);
    }
    _tile_release();
}

__attribute__((noinline)) static AMX void amx_rows8(float *y, const struct ops_q8_block *X,
                                                    const unsigned char *W, const float *bias, int T, int nb,
                                                    int O, int o0, int o1, bool accumulate)
{
    amx_rows(y, X, W, bias, T, nb, O, o0, o1, accumulate, 8);
}

__attribute__((noinline)) static AMX void amx_rows16(float *y, const struct ops_q8_block *X,
                                                     const unsigned char *W, const float *bias, int T, int nb,
                                                     int O, int o0, int o1, bool accumulate)
{
    amx_rows(y, X, W, bias, T, nb, O, o0, o1, accumulate, 16);
}

/* x prepared (ops_q8_amx_prepare_x): every 16-row chunk of the rows in
 * one span, then the last chunk of 1-8 rows in the 8-row form. */
__attribute__((noinline)) static AMX void amx_prepared(float *y, const unsigned char *xc, const unsigned char *W,
                                                       const float *bias, int T, int t8, int nb, int O, int o0,
                                                       int o1, bool accumulate)
{
    size_t cs16 = (size_t)nb * XBLK(16);
    if (t8 > 0) {
        amx_config(16);
        amx_span(y, xc, cs16, W, bias, t8, nb, O, o0, o1, accumulate, 16);
    }
    if (t8 < T) {
        amx_config(8);
        amx_span(y + (size_t)t8 * O, xc + (size_t)((t8 + 15) / 16) * cs16, (size_t)nb * XBLK(8), W, bias, T - t8,
                 nb, O, o0, o1, accumulate, 8);
    }
    _tile_release();
}

/* Rows in chunks of 16, a last one of 1-8 rows in the 8-row form (a row's
 * bits do not depend on the form): the rows that go in 16-row chunks. */
static int amx_t16(int T)
{
    return T % 16 && T % 16 <= 8 ? T - T % 16 : T;
}

/* Blocks a part of ops_q8_amx_prepare_x quantizes and packs: the preparation
 * splits over the threads, each part whole lines of the form; 16, as the
 * quantization takes 16 blocks of a row at once (1.3x faster a block than
 * one at a time). */
#define AMX_PART_BLOCKS 16

/* Whether a product of T rows of nb blocks runs on the tiles. */
static bool amx_takes(int T, int nb)
{
    return T >= AMX_MIN_ROWS && nb <= AMX_MAX_BLOCKS;
}

static size_t amx_rows_bytes(int T, int I)
{
    return ((size_t)T * ops_q8_row_bytes(I) + 63) & ~(size_t)63;
}

size_t ops_q8_amx_x_bytes(int T, int I)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK, t8 = amx_t16(T);
    if (!amx_takes(T, nb))
        return (size_t)T * ops_q8_row_bytes(I);
    return amx_rows_bytes(T, I) + (size_t)nb * ((size_t)((t8 + 15) / 16) * XBLK(16) + (t8 < T ? XBLK(8) : 0));
}

int ops_q8_amx_x_parts(int T, int I)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK, t8 = amx_t16(T);
    if (!amx_takes(T, nb))
        return T;
    return ((t8 + 15) / 16 + (t8 < T)) * ((nb + AMX_PART_BLOCKS - 1) / AMX_PART_BLOCKS);
}

__attribute__((noinline)) static AMX void amx_prepare_part(unsigned char *dst, const float *x, int T, int I,
                                                           int part)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK, t8 = amx_t16(T);
    int pieces = (nb + AMX_PART_BLOCKS - 1) / AMX_PART_BLOCKS, c = part / pieces;
    int k0 = part % pieces * AMX_PART_BLOCKS, k1 = k0 + AMX_PART_BLOCKS < nb ? k0 + AMX_PART_BLOCKS : nb;
    int n16 = (t8 + 15) / 16, N = c < n16 ? 16 : 8, t0 = c < n16 ? 16 * c : t8;
    int t1 = t0 + N < T ? t0 + N : T;
    if (c >= n16)
        t1 = T;
    size_t rb = ops_q8_row_bytes(I);
    /* the rows' blocks k0 .. k1 - 1 (Q8_0 is per block: the bytes of the whole row's quantization) */
    int i0 = k0 * OPS_Q8_BLOCK, ni = I - i0 < (k1 - k0) * OPS_Q8_BLOCK ? I - i0 : (k1 - k0) * OPS_Q8_BLOCK;
    for (int t = t0; t < t1; t++)
        ops_q8_quantize_row(dst + (size_t)t * rb + (size_t)k0 * sizeof(struct ops_q8_block), x + (size_t)t * I + i0,
                            ni);
    unsigned char *xc = dst + amx_rows_bytes(T, I) + (size_t)(c < n16 ? c : n16) * nb * XBLK(16);
    const struct ops_q8_block *X = (const struct ops_q8_block *)(dst + (size_t)t0 * rb);
    if (N == 16)
        pack_blocks(xc, X, (size_t)nb, k0, k1, t1 - t0, 16);
    else
        pack_blocks(xc, X, (size_t)nb, k0, k1, t1 - t0, 8);
}

void ops_q8_amx_prepare_x(void *dst, const float *x, int T, int I, int part)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    if (!amx_takes(T, nb)) {
        ops_q8_quantize_row((char *)dst + (size_t)part * ops_q8_row_bytes(I), x + (size_t)part * I, I);
        return;
    }
    amx_prepare_part(dst, x, T, I, part);
}

void ops_matmul_q8x_amx(float *y, const void *xp, const void *wq, const float *bias, int T, int I, int O, int o0,
                        int o1, bool accumulate)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    if (!amx_takes(T, nb)) {
        ops_matmul_q8_vnni(y, xp, wq, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    amx_prepared(y, (const unsigned char *)xp + amx_rows_bytes(T, I), wq, bias, T, amx_t16(T), nb, O, o0, o1,
                 accumulate);
}

void ops_matmul_q8_amx(float *y, const void *xq, const void *wq, const float *bias, int T, int I, int O, int o0,
                       int o1, bool accumulate)
{
    int nb = (I + OPS_Q8_BLOCK - 1) / OPS_Q8_BLOCK;
    if (T < AMX_MIN_ROWS || nb > AMX_MAX_BLOCKS) {
        ops_matmul_q8_vnni(y, xq, wq, bias, T, I, O, o0, o1, accumulate);
        return;
    }
    int t8 = amx_t16(T);
    if (t8 > 0)
        amx_rows16(y, xq, wq, bias, t8, nb, O, o0, o1, accumulate);
    if (t8 < T)
        amx_rows8(y + (size_t)t8 * O, (const struct ops_q8_block *)xq + (size_t)t8 * nb, wq, bias, T - t8, nb, O, o0,
                  o1, accumulate);
}
#endif /* OPS_HAVE_AMX */
