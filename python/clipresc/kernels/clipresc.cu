/*
 * clipresc GPU kernels: clipping-aware rescaling on 2-D (B, n) row-major data.
 *
 * One block (work-group) of CLIPRESC_BLOCK threads handles one row (vector) at a time;
 * blocks loop over rows (grid-stride), threads loop over the row (block-stride); long rows
 * of small batches can instead be cut into segments of one block each (the split kernels
 * at the end). All reductions are shared-memory trees over fixed per-thread partials, so
 * results are bitwise reproducible for a given block size (and segment plan). Everything
 * is accumulated in double.
 *
 * The source is written in the portable dialect of dialect.h and builds both as CUDA
 * (NVRTC) and as OpenCL C (-DCLIPRESC_OPENCL). Element type: -DREAL=float|double.
 *
 * Per element (see DESIGN.md section 1): a = |d|, room s = u - x (d > 0) or x - l (d < 0),
 * movable iff d != 0. Element i is saturated at eta iff s_i <= eta * a_i (ties saturate;
 * infinite room never saturates). With t = eta^p the p-th power of the achieved size is
 * g(t) = C + M t (C = sum of s^p over saturated, M = sum of a^p over unsaturated).
 *
 * Solve (finite p), in few passes over global memory:
 * 1. The first pass (TOTALS) gathers the totals and bins every movable element by the bit
 *    pattern of its breakpoint key s / a (ordered like the value) into a block-shared
 *    histogram of CR_NB bins holding sum a^p and sum s^p in 64-bit fixed point (integer
 *    atomics: order-independent, so deterministic), the count and the largest key. The
 *    bins span a window of 4 binades from eta0 / 2, eta0 = (T / M)^(1/p) the naive
 *    rescaling, M estimated from the row's first CR_NB elements (read once, kept in
 *    registers for the pass); the first and last bins reach to 0 and infinity. Rows
 *    with at most CR_CAND movable elements are also copied to shared memory whole.
 * 2. A scan of the histogram estimates the bin where g crosses T; one pass (RANGE) over
 *    the row then sums exactly what lies below and above that bin's key range, and copies
 *    the elements inside it (a few hundred on typical data) to shared memory, or, when
 *    more than CR_CAND lie inside, bins them again, finer (at most CR_LEVELS times).
 *    The exact sums at the range's edges tighten the bracket [lo, hi] (g(lo) <= T < g(hi)),
 *    and when lo's linear piece reaches its root before the range's smallest key, that
 *    root is the answer (Newton's stopping test, without a pass).
 * 3. The candidates are sorted by value (a canonical order: deterministic sums) and the
 *    root is finished on them in shared memory with the safeguarded iteration below, the
 *    sums outside the range added as constants: no further global pass.
 * The safeguarded iteration: Newton / variable fixing from lo (each step one block
 * reduction of C, M and the saturated count), stopping when the saturated set stops
 * growing; after CR_NEWTON_PASSES steps, bisection on the bit pattern of eta between lo
 * and hi, stopping as soon as the brackets hold the same saturated set (then no breakpoint
 * lies between them and the root of the lower bracket's linear piece is exact). The bit
 * patterns of non-negative doubles are ordered like the values, so at most 64 bisection
 * steps are ever needed. When the histogram's estimate misses (the exact sums show the
 * root outside the range: its fixed-point sums cannot resolve every input), the next
 * range pass covers the whole bracket (lo, hi]; when the levels run out, the iteration
 * runs over the whole row from the bracket known so far (one global pass per step). The
 * step count, range passes included, stays within CR_NEWTON_PASSES + CR_BISECT_PASSES
 * whatever the input.
 *
 * Operands that may be arrays or scalars (eps, lower, upper) are passed as
 * (pointer, row stride, element stride, is_array, scalar value); stride 0 broadcasts.
 *
 * pm (the norm): 0 = general p (pow), 1 = p == 1, 2 = p == 2, 3 = p == inf.
 */
#include "dialect.h"

#define CR_NB CLIPRESC_BLOCK
#if (CR_NB & (CR_NB - 1)) != 0
#error "CLIPRESC_BLOCK must be a power of two"
#endif

#define CR_NEWTON_PASSES 8
#define CR_BISECT_PASSES 66

/* Breakpoint histogram: one bin per thread; candidates finished in shared memory; range
 * passes before falling back to global Newton / bisection; bin width of the first pass
 * (2^46 bit patterns: 64 bins per binade); fixed-point scale of a bin's expected sum. */
#define CR_CAND 512
#define CR_LEVELS 6
#define CR_SHIFT0 46
#define CR_FIX 1099511627776.0 /* 2^40 */

#define CR_PM_ANY 0
#define CR_PM_ONE 1
#define CR_PM_TWO 2
#define CR_PM_INF 3

/* Modes of the per-row gradient coefficients (see cr_coeffs). */
#define CR_MODE_GENERAL 0 /* finite p, reachable, eta > 0 */
#define CR_MODE_INF 1     /* p = inf, reachable: eta = eps / a_k */
#define CR_MODE_LAST 2    /* every movable element saturated: eta = s_k / a_k */
#define CR_MODE_ZERO 3    /* eta identically 0 around this point (eps = 0, nothing movable) */

#define CR_ROWINFO 6 /* doubles per row in the rowinfo scratch */

/* Bits of the error word (kernels/__init__.py ERR_BITS names them; the host reads the
 * word once per call and, when it is not 0, reruns the exact checks for the message). */
#define CR_ERR_EPS_NEG 1    /* eps < 0 or NaN */
#define CR_ERR_EPS_INF 2    /* eps infinite */
#define CR_ERR_LO_NAN 4     /* a lower bound is NaN */
#define CR_ERR_HI_NAN 8     /* an upper bound is NaN */
#define CR_ERR_CROSSED 16   /* lower > upper */
#define CR_ERR_X 32         /* x not finite */
#define CR_ERR_D 64         /* delta not finite */
#define CR_ERR_OUTSIDE 128  /* x outside [lower, upper] */
#define CR_ERR_UNREACH 256  /* some row's eps exceeds its largest reachable size */

/* ----------------------------------------------------------------- element access */

typedef struct {
    const CR_GLOBAL real* x;
    const CR_GLOBAL real* d;
    const CR_GLOBAL real* lo;
    const CR_GLOBAL real* hi;
    cr_i64 lo_es, hi_es;
    int lo_arr, hi_arr;
    acc lo_v, hi_v;
    cr_i64 n;
} cr_row;

typedef struct {
    acc x, d, a, s, lo, hi;
    int mv;
} cr_el;

CR_DEVICE cr_row cr_make_row(const CR_GLOBAL real* x, const CR_GLOBAL real* d,
                             const CR_GLOBAL real* lo_p, cr_i64 lo_rs, cr_i64 lo_es, int lo_arr,
                             acc lo_v, const CR_GLOBAL real* hi_p, cr_i64 hi_rs, cr_i64 hi_es,
                             int hi_arr, acc hi_v, cr_i64 n, cr_i64 row) {
    cr_row r;
    r.x = x + row * n;
    r.d = d + row * n;
    r.lo = lo_p + (lo_arr ? row * lo_rs : 0);
    r.hi = hi_p + (hi_arr ? row * hi_rs : 0);
    r.lo_es = lo_es;
    r.hi_es = hi_es;
    r.lo_arr = lo_arr;
    r.hi_arr = hi_arr;
    r.lo_v = lo_v;
    r.hi_v = hi_v;
    r.n = n;
    return r;
}

/* Bytes cr_load reads per element (x, d and the bounds that are arrays); for CR_TRAFFIC
 * (a macro: unused outside the counting build). */
#define CR_EL_BYTES(r) ((cr_i64)sizeof(real) * (2 + ((r).lo_arr ? 1 : 0) + ((r).hi_arr ? 1 : 0)))

/* The raw operands of one element as stored (bounds only where they are arrays). */
typedef struct {
    real x, d, lo, hi;
} cr_raw;

CR_DEVICE cr_raw cr_load_raw(cr_row r, cr_i64 i) {
    cr_raw w;
    w.x = r.x[i];
    w.d = r.d[i];
    w.lo = r.lo_arr ? r.lo[i * r.lo_es] : (real)0;
    w.hi = r.hi_arr ? r.hi[i * r.hi_es] : (real)0;
    return w;
}

/* (never read: the slots of a round past the range's end) */
CR_DEVICE cr_raw cr_raw_zero(void) {
    cr_raw w;
    w.x = w.d = w.lo = w.hi = (real)0;
    return w;
}

CR_DEVICE cr_el cr_el_of(cr_row r, cr_raw w) {
    cr_el e;
    e.x = CR_ACC(w.x);
    e.d = CR_ACC(w.d);
    e.lo = r.lo_arr ? CR_ACC(w.lo) : r.lo_v;
    e.hi = r.hi_arr ? CR_ACC(w.hi) : r.hi_v;
    e.a = fabs(e.d);
    e.mv = e.d != 0.0;
    acc s = e.d > 0.0 ? e.hi - e.x : e.x - e.lo;
    e.s = s > 0.0 ? s : 0.0;
    return e;
}

CR_DEVICE cr_el cr_load(cr_row r, cr_i64 i) { return cr_el_of(r, cr_load_raw(r, i)); }

/* Element i from its x and d already loaded (bounds that are arrays read here). */
CR_DEVICE cr_el cr_el_at(cr_row r, cr_i64 i, real x, real d) {
    cr_raw w;
    w.x = x;
    w.d = d;
    w.lo = r.lo_arr ? r.lo[i * r.lo_es] : (real)0;
    w.hi = r.hi_arr ? r.hi[i * r.hi_es] : (real)0;
    return cr_el_of(r, w);
}

/* Elements per 16 bytes: 4 floats or 2 doubles. */
#define CR_VW ((int)(16 / sizeof(real)))

/* Streaming passes with reductions: the loop
 *     for (i = i0 + CR_TID; i < i1; i += CR_NB) { cr_el e = element i; BODY }
 * in rounds of CR_VW elements per thread whose loads are all issued before the first is
 * used: CR_VW independent loads of x and of d in flight per thread (16 bytes each),
 * each coalesced across the warp (bounds that are arrays, the rarer case, are read as
 * each element is used: prefetching them too costs the capped kernels spills). A thread still meets its elements in the same order
 * (i0 + CR_TID, + CR_NB, ...), so every per-thread partial sum, and so every result, is
 * bitwise that of the one-element loop. (16-byte vector loads would hand a thread 4
 * consecutive elements and change that order; they serve the element-wise passes,
 * cr_apply_range.) skip0: element CR_TID is not loaded (the caller has it; BODY must
 * not use e for it). */
#define CR_ROUNDS(r, i0, i1, skip0, i, e, ...)                                             \
    for (cr_i64 cr_b_ = (i0) + CR_TID; cr_b_ < (i1); cr_b_ += CR_VW * CR_NB) {           \
        real cr_x_[CR_VW], cr_d_[CR_VW];                                                  \
        _Pragma("unroll") for (int u_ = 0; u_ < CR_VW; ++u_) {                             \
            cr_i64 j_ = cr_b_ + u_ * CR_NB;                                                \
            int in_ = j_ < (i1) && !((skip0) && j_ == CR_TID);                             \
            cr_x_[u_] = in_ ? (r).x[j_] : (real)0;                                         \
            cr_d_[u_] = in_ ? (r).d[j_] : (real)0;                                         \
        }                                                                                  \
        _Pragma("unroll 1") for (int u_ = 0; u_ < CR_VW; ++u_) {                               \
            cr_i64 i = cr_b_ + u_ * CR_NB;                                                 \
            if (i < (i1)) {                                                                \
                cr_el e = cr_el_at((r), i, cr_x_[u_], cr_d_[u_]);                          \
                __VA_ARGS__                                                                \
            }                                                                              \
        }                                                                                  \
    }

/* An element that does not move (placeholder for threads past the row's end). */
CR_DEVICE cr_el cr_el_zero(void) {
    cr_el e;
    e.x = 0.0;
    e.d = 0.0;
    e.a = 0.0;
    e.s = 0.0;
    e.lo = 0.0;
    e.hi = 0.0;
    e.mv = 0;
    return e;
}

/* Error bits of one element (NaN bounds compare false, so they are not "outside"). */
CR_DEVICE int cr_check_el(cr_el e) {
    int bad = 0;
    if (!isfinite(e.x)) bad |= CR_ERR_X;
    if (!isfinite(e.d)) bad |= CR_ERR_D;
    if (isnan(e.lo)) bad |= CR_ERR_LO_NAN;
    if (isnan(e.hi)) bad |= CR_ERR_HI_NAN;
    if (e.lo > e.hi) bad |= CR_ERR_CROSSED;
    if (e.x < e.lo || e.x > e.hi) bad |= CR_ERR_OUTSIDE;
    return bad;
}

CR_DEVICE int cr_check_eps(acc eps) {
    if (!(eps >= 0.0)) return CR_ERR_EPS_NEG;
    return isinf(eps) ? CR_ERR_EPS_INF : 0;
}

/* The breakpoint s / a, rounded so that the element counts as saturated there: the
 * smallest double key with key * a >= s (the saturation test never divides). */
CR_DEVICE acc cr_key_of(acc s, acc a) {
    acc k = s / a;
    return k * a < s ? nextafter(k, CR_INF) : k;
}

CR_DEVICE acc cr_key(cr_el e) { return cr_key_of(e.s, e.a); }

/* ----------------------------------------------------------------- powers */

CR_DEVICE acc cr_pow(acc v, acc p, int pm) {
    return pm == CR_PM_ONE ? v : (pm == CR_PM_TWO ? v * v : pow(v, p));
}

CR_DEVICE acc cr_root(acc t, acc p, int pm) {
    return pm == CR_PM_ONE ? t : (pm == CR_PM_TWO ? sqrt(t) : pow(t, 1.0 / p));
}

/* v^(p-1) */
CR_DEVICE acc cr_powm1(acc v, acc p, int pm) {
    return pm == CR_PM_ONE ? 1.0 : (pm == CR_PM_TWO ? v : pow(v, p - 1.0));
}

/* ----------------------------------------------------------------- block reduction */

/* Partial results of one pass over a row: three double sums, two integer sums and one
 * lexicographic arg-max (larger k1, then larger k2, then smaller index). */
typedef struct {
    acc s0, s1, s2, s3;
    cr_i64 n0, n1;
    acc k1, k2;
    cr_i64 ki;
} cr_part;

CR_DEVICE cr_part cr_part_zero(void) {
    cr_part q;
    q.s0 = 0.0;
    q.s1 = 0.0;
    q.s2 = 0.0;
    q.s3 = 0.0;
    q.n0 = 0;
    q.n1 = 0;
    q.k1 = -1.0;
    q.k2 = -1.0;
    q.ki = -1;
    return q;
}

/* (k1, k2, i) beats (l1, l2, j)? */
CR_DEVICE int cr_better(acc k1, acc k2, cr_i64 i, acc l1, acc l2, cr_i64 j) {
    if (k1 != l1) return k1 > l1;
    if (k2 != l2) return k2 > l2;
    return i < j;
}

CR_DEVICE void cr_part_argmax(cr_part* q, acc k1, acc k2, cr_i64 i);

/* q and b combined (sums added, arg-max kept): partials of two pieces of a row. */
CR_DEVICE cr_part cr_part_add(cr_part q, cr_part b) {
    q.s0 += b.s0;
    q.s1 += b.s1;
    q.s2 += b.s2;
    q.s3 += b.s3;
    q.n0 += b.n0;
    q.n1 += b.n1;
    cr_part_argmax(&q, b.k1, b.k2, b.ki);
    return q;
}

CR_DEVICE void cr_part_argmax(cr_part* q, acc k1, acc k2, cr_i64 i) {
    if (cr_better(k1, k2, i, q->k1, q->k2, q->ki)) {
        q->k1 = k1;
        q->k2 = k2;
        q->ki = i;
    }
}

#define CR_BUF_PARAMS                                                              \
    CR_LOCAL_PTR acc *sh_s0, CR_LOCAL_PTR acc *sh_s1, CR_LOCAL_PTR acc *sh_s2,         \
        CR_LOCAL_PTR acc *sh_s3, CR_LOCAL_PTR cr_i64 *sh_n0, CR_LOCAL_PTR cr_i64 *sh_n1
#define CR_BUFS sh_s0, sh_s1, sh_s2, sh_s3, sh_n0, sh_n1
/* The histogram (per bin: fixed-point sum a^p, sum s^p, count, largest key bit pattern)
 * and the candidates (s, a) with their counter. Shared memory in all: 28.7 KB, within
 * the 32 KB many OpenCL devices (and Oclgrind) offer. */
#define CR_HIST_PARAMS                                                                   \
    CR_LOCAL_PTR cr_i64 *sh_hw, CR_LOCAL_PTR cr_i64 *sh_hc, CR_LOCAL_PTR cr_i64 *sh_hn,  \
        CR_LOCAL_PTR cr_i64 *sh_hmax, CR_LOCAL_PTR acc *sh_cs, CR_LOCAL_PTR acc *sh_ca,  \
        CR_LOCAL_PTR cr_i64 *sh_nc
#define CR_HIST sh_hw, sh_hc, sh_hn, sh_hmax, sh_cs, sh_ca, sh_nc
#define CR_DECLARE_REDUCE_BUFS       \
    CR_SHARED acc sh_s0[CR_NB];      \
    CR_SHARED acc sh_s1[CR_NB];      \
    CR_SHARED acc sh_s2[CR_NB];      \
    CR_SHARED acc sh_s3[CR_NB];      \
    CR_SHARED cr_i64 sh_n0[CR_NB];   \
    CR_SHARED cr_i64 sh_n1[CR_NB]
#define CR_DECLARE_BUFS              \
    CR_DECLARE_REDUCE_BUFS;          \
    CR_SHARED cr_i64 sh_hw[CR_NB];   \
    CR_SHARED cr_i64 sh_hc[CR_NB];   \
    CR_SHARED cr_i64 sh_hn[CR_NB];   \
    CR_SHARED cr_i64 sh_hmax[CR_NB]; \
    CR_SHARED acc sh_cs[CR_CAND];    \
    CR_SHARED acc sh_ca[CR_CAND];    \
    CR_SHARED cr_i64 sh_nc[1]

/* Block-wide reduction of the partials (fixed trees: deterministic); every thread gets
 * the result. The sums first, then the arg-max in the same buffers (less shared memory).
 * Like every barrier site of the kernels, called in uniform control flow. */
CR_DEVICE cr_part cr_reduce(CR_BUF_PARAMS, cr_part q) {
    int t = (int)CR_TID;
    sh_s0[t] = q.s0;
    sh_s1[t] = q.s1;
    sh_s2[t] = q.s2;
    sh_s3[t] = q.s3;
    sh_n0[t] = q.n0;
    sh_n1[t] = q.n1;
    CR_BARRIER();
#pragma unroll 1
    for (int h = CR_NB / 2; h > 0; h >>= 1) {
        if (t < h) {
            sh_s0[t] += sh_s0[t + h];
            sh_s1[t] += sh_s1[t + h];
            sh_s2[t] += sh_s2[t + h];
            sh_s3[t] += sh_s3[t + h];
            sh_n0[t] += sh_n0[t + h];
            sh_n1[t] += sh_n1[t + h];
        }
        CR_BARRIER();
    }
    cr_part r = q;
    r.s0 = sh_s0[0];
    r.s1 = sh_s1[0];
    r.s2 = sh_s2[0];
    r.s3 = sh_s3[0];
    r.n0 = sh_n0[0];
    r.n1 = sh_n1[0];
    CR_BARRIER();
    /* arg-max: (k1, k2, ki) in (s0, s1, n0) */
    sh_s0[t] = q.k1;
    sh_s1[t] = q.k2;
    sh_n0[t] = q.ki;
    CR_BARRIER();
#pragma unroll 1
    for (int h = CR_NB / 2; h > 0; h >>= 1) {
        if (t < h && cr_better(sh_s0[t + h], sh_s1[t + h], sh_n0[t + h], sh_s0[t], sh_s1[t],
                               sh_n0[t])) {
            sh_s0[t] = sh_s0[t + h];
            sh_s1[t] = sh_s1[t + h];
            sh_n0[t] = sh_n0[t + h];
        }
        CR_BARRIER();
    }
    r.k1 = sh_s0[0];
    r.k2 = sh_s1[0];
    r.ki = sh_n0[0];
    CR_BARRIER();
    return r;
}

/* ----------------------------------------------------------------- solve */

/* The per-row solver is a small state machine: each step is one pass over the row (or
 * over the candidates in shared memory), one block reduction (cr_reduce) and a uniform
 * update (cr_step), sometimes followed by a histogram scan (cr_select) or the candidates'
 * sort (cr_sort). */
#define CR_PH_TOTALS 0 /* finite p: totals, state at eta = 0, largest breakpoint; histogram */
#define CR_PH_EVAL 1   /* finite p: C, M and saturated count at eta = m */
#define CR_PH_INF1 2   /* p = inf: max a over s >= eps */
#define CR_PH_INF2 3   /* p = inf, unreachable: max (s, a) */
#define CR_PH_DONE 4
#define CR_PH_RANGE 5 /* finite p: exact sums around the key range [r_lo, r_hi); histogram */

/* What follows a step (cr_state.want). */
#define CR_WANT_NONE 0
#define CR_WANT_SELECT 1 /* pick the next key range from the histogram */
#define CR_WANT_SORT 2   /* every element of the bracket is a candidate: finish in shared */

typedef struct {
    acc eps, T, p;
    int pm, phase;
    /* result */
    acc eta;
    int unreach;
    cr_i64 k; /* finite p: arg-max of s/a; inf: the element that sets eta; -1: none */
    int passes; /* passes over the row in global memory */
    /* brackets of the finite-p solve: g(lo) <= T < g(hi) */
    acc lo, lo_C, lo_M, hi, m;
    cr_i64 lo_cnt, hi_cnt;
    int it, newton;
    /* histogram: bins of the key bit patterns in [r_lo, r_hi), bin b from base + b << shift
     * (the first and last bins reach down to r_lo and up to r_hi); fixed-point scales */
    cr_i64 r_lo, r_hi, base;
    int shift, level, want, src; /* src: 1 = steps run over the shared candidates */
    acc wscale, cscale, climit;
    /* outside the candidates: sum s^p below, sum a^p above, count below; candidates */
    acc c_out, m_out;
    cr_i64 n_out, ncand;
    /* VJP pass */
    acc msol, ybar_d;
} cr_state;

CR_DEVICE cr_state cr_start(acc eps, acc p, int pm) {
    cr_state st;
    st.eps = eps;
    st.p = p;
    st.pm = pm;
    st.T = pm == CR_PM_INF ? eps : cr_pow(eps, p, pm);
    st.phase = pm == CR_PM_INF ? CR_PH_INF1 : CR_PH_TOTALS;
    st.eta = 0.0;
    st.unreach = 0;
    st.k = -1;
    st.passes = 0;
    st.lo = 0.0;
    st.lo_C = 0.0;
    st.lo_M = 0.0;
    st.hi = 0.0;
    st.m = 0.0;
    st.lo_cnt = 0;
    st.hi_cnt = 0;
    st.it = 0;
    st.newton = 0;
    st.r_lo = 0;
    st.r_hi = CR_I64_MAX;
    st.base = 0;
    st.shift = CR_SHIFT0;
    st.level = 0;
    st.want = CR_WANT_NONE;
    st.src = 0;
    st.wscale = 1.0;
    st.cscale = 1.0;
    st.climit = 1.0;
    st.c_out = 0.0;
    st.m_out = 0.0;
    st.n_out = 0;
    st.ncand = 0;
    st.msol = 0.0;
    st.ybar_d = 0.0;
    return st;
}

/* A non-negative double as a fixed-point integer, capped at lim (NaN counts as 0). */
CR_DEVICE cr_i64 cr_fix(acc v, acc lim) {
    if (!(v > 0.0)) return 0;
    return (cr_i64)(v < lim ? v + 0.5 : lim);
}

/* Histogram scales and the first window from a sample (the first CR_NB elements, one per
 * thread: e0, valid when in): M and C of the row estimated as the sample's times n / its
 * size, the window 4 binades from eta0 / 2, eta0 = (T / M)^(1/p) the naive rescaling. */
CR_COLD void cr_sample(cr_state* st, cr_el e0, int in, cr_i64 n, CR_BUF_PARAMS) {
    cr_part q = cr_part_zero();
    if (in) {
        q.n0 = 1;
        if (e0.mv && e0.s > 0.0) {
            q.s0 = cr_pow(e0.a, st->p, st->pm);
            acc c = cr_pow(e0.s, st->p, st->pm);
            if (isfinite(c)) q.s1 = c;
        }
    }
    q = cr_reduce(CR_BUFS, q);
    acc f = q.n0 > 0 ? (acc)n / (acc)q.n0 : 1.0;
    acc W = q.s0 * f, C = q.s1 * f;
    st->wscale = W > 0.0 && isfinite(W) ? CR_FIX / W : 1.0;
    st->cscale = C > 0.0 && isfinite(C) ? CR_FIX / C : 1.0;
    /* sums of n values below lim stay below 2^62 */
    st->climit = 4611686018427387904.0 / (acc)(n > 0 ? n : 1);
    acc e = W > 0.0 ? cr_root(st->T / W, st->p, st->pm) : 1.0;
    if (!(e > 0.0) || !isfinite(e)) e = 1.0;
    st->base = CR_D2L(0.5 * e) & ~(((cr_i64)1 << CR_SHIFT0) - 1);
    st->shift = CR_SHIFT0;
}

/* Empties the histogram and the candidate counter (all threads; ends with a barrier). */
CR_DEVICE void cr_hist_clear(CR_HIST_PARAMS) {
    int t = (int)CR_TID;
    sh_hw[t] = 0;
    sh_hc[t] = 0;
    sh_hn[t] = 0;
    sh_hmax[t] = -1;
    if (t == 0) sh_nc[0] = 0;
    CR_BARRIER();
}

/* TOTALS and RANGE passes: element i into the histogram and the candidates when its key
 * lies in [r_lo, r_hi); RANGE also adds it to the partials: s0 = sum s^p below the range
 * (n0 counts them), s1 = sum a^p above, s2 / s3 = sum a^p / s^p inside (n1 counts them),
 * k2 = minus the smallest key inside. */
CR_DEVICE void cr_hist_el(cr_part* q, const cr_state* st, cr_el e, cr_i64 i, CR_HIST_PARAMS) {
    if (!e.mv) return;
    cr_i64 kb = CR_D2L(cr_key(e));
    acc w = cr_pow(e.a, st->p, st->pm), c = cr_pow(e.s, st->p, st->pm);
    if (st->phase == CR_PH_RANGE) {
        if (kb < st->r_lo) {
            q->s0 += c;
            q->n0 += 1;
            return;
        }
        if (kb >= st->r_hi) {
            q->s1 += w;
            return;
        }
        q->s2 += w;
        q->s3 += c;
        q->n1 += 1;
        cr_part_argmax(q, 0.0, -CR_L2D(kb), i); /* the smallest key inside */
    }
    cr_i64 b = kb < st->base ? 0 : (kb - st->base) >> st->shift;
    if (b > CR_NB - 1) b = CR_NB - 1;
    CR_LADD64(&sh_hw[b], cr_fix(w * st->wscale, st->climit));
    CR_LADD64(&sh_hc[b], cr_fix(c * st->cscale, st->climit));
    CR_LADD64(&sh_hn[b], 1);
    CR_LMAX64(&sh_hmax[b], kb);
    cr_i64 slot = CR_LADD64(sh_nc, 1);
    if (slot < CR_CAND) {
        sh_cs[slot] = e.s;
        sh_ca[slot] = e.a;
    }
}

/* Adds element i to the partials of the current phase (RANGE: see cr_hist_el). */
CR_DEVICE void cr_accumulate(cr_part* q, const cr_state* st, cr_el e, cr_i64 i) {
    if (!e.mv) return;
    acc p = st->p;
    int pm = st->pm;
    switch (st->phase) {
        case CR_PH_TOTALS:
            q->s0 += cr_pow(e.s, p, pm);
            if (e.s > 0.0) {
                q->s1 += cr_pow(e.a, p, pm);
            } else {
                q->n0 += 1;
            }
            q->n1 += 1;
            cr_part_argmax(q, cr_key(e), 0.0, i);
            break;
        case CR_PH_EVAL:
            if (e.s <= st->m * e.a) {
                q->s0 += cr_pow(e.s, p, pm);
                q->n0 += 1;
            } else {
                q->s1 += cr_pow(e.a, p, pm);
            }
            break;
        case CR_PH_INF1:
            /* (s > 0 only matters at eps = 0: the right derivative in eps follows the
             * largest |d| among the elements that can move at all) */
            q->n1 += 1;
            if (e.s >= st->eps && e.s > 0.0) cr_part_argmax(q, e.a, 0.0, i);
            break;
        case CR_PH_INF2:
            cr_part_argmax(q, e.s, e.a, i);
            break;
        default:
            break;
    }
}

CR_DEVICE void cr_solved(cr_state* st) {
    st->phase = CR_PH_DONE;
}

/* Picks the next evaluation point of the finite-p solve, or finishes it. */
CR_DEVICE void cr_next(cr_state* st) {
    cr_i64 bl = CR_D2L(st->lo), bh = CR_D2L(st->hi);
    if (st->it >= CR_NEWTON_PASSES + CR_BISECT_PASSES || st->lo_cnt == st->hi_cnt ||
        bh - bl <= 1) {
        /* No breakpoint in (lo, hi): the root of lo's linear piece is exact. */
        acc t = st->lo_M > 0.0 ? (st->T - st->lo_C) / st->lo_M : 0.0;
        acc eta = cr_root(t > 0.0 ? t : 0.0, st->p, st->pm);
        st->eta = fmax(st->lo, fmin(eta, st->hi));
        cr_solved(st);
        return;
    }
    int newton = st->it < CR_NEWTON_PASSES;
    acc m = 0.0;
    if (newton) {
        m = cr_root((st->T - st->lo_C) / st->lo_M, st->p, st->pm);
        if (!(m > st->lo)) { /* the root of lo's piece is lo itself (rounding) */
            st->eta = st->lo;
            cr_solved(st);
            return;
        }
        if (!(m < st->hi)) newton = 0;
    }
    if (!newton) m = CR_L2D(bl + (bh - bl) / 2); /* bisection on the bit pattern */
    st->m = m;
    st->newton = newton;
    st->phase = CR_PH_EVAL;
}

/* The next pass is a RANGE pass over the keys with bit patterns in [lo, hi), binned from lo
 * in the fewest bins of equal power-of-two width that cover it. */
CR_DEVICE void cr_range_of(cr_state* st, cr_i64 lo, cr_i64 hi) {
    st->r_lo = lo;
    st->r_hi = hi;
    st->base = lo;
    int sh = 0;
    while (sh < 62 && ((hi - 1 - lo) >> sh) >= CR_NB) sh += 1;
    st->shift = sh;
    st->level += 1;
    st->want = CR_WANT_NONE;
    st->phase = CR_PH_RANGE;
}

/* After a RANGE pass: the exact sums at the range's edges tighten the bracket, then the
 * candidates finish the solve (all of the bracket's breakpoints lie in the range and were
 * copied), or a finer range is picked, or the global iteration continues. */
CR_COLD void cr_range_done(cr_state* st, cr_part q) {
    acc p = st->p;
    int pm = st->pm;
    acc c_below = q.s0, m_above = q.s1, w_in = q.s2, c_in = q.s3;
    cr_i64 n_below = q.n0, n_in = q.n1;
    st->it += 1;
    /* just below the range: its keys unsaturated */
    acc m1 = st->r_lo > 0 ? CR_L2D(st->r_lo - 1) : -1.0;
    if (st->r_lo > 0) {
        if (c_below + (m_above + w_in) * cr_pow(m1, p, pm) <= st->T) {
            if (m1 > st->lo) {
                st->lo = m1;
                st->lo_C = c_below;
                st->lo_M = m_above + w_in;
                st->lo_cnt = n_below;
            }
        } else if (m1 < st->hi) {
            st->hi = m1;
            st->hi_cnt = n_below;
        }
    }
    /* the range's largest key: all of it saturated */
    acc m2 = CR_L2D(st->r_hi - 1);
    if (c_below + c_in + m_above * cr_pow(m2, p, pm) > st->T) {
        if (m2 < st->hi) {
            st->hi = m2;
            st->hi_cnt = n_below + n_in;
        }
    } else if (m2 > st->lo) {
        st->lo = m2;
        st->lo_C = c_below + c_in;
        st->lo_M = m_above;
        st->lo_cnt = n_below + n_in;
    }
    st->c_out = c_below;
    st->m_out = m_above;
    st->n_out = n_below;
    /* No key lies in (lo, kmin): when the root of lo's linear piece is below kmin, it is
     * the exact root (Newton's stopping test, for free). */
    acc kmin = n_in > 0 ? -q.k2 : CR_INF;
    if (st->lo >= m1 && st->lo < kmin && st->lo_M > 0.0) {
        acc t = (st->T - st->lo_C) / st->lo_M;
        acc eta = cr_root(t > 0.0 ? t : 0.0, p, pm);
        if (eta < kmin) {
            st->eta = fmax(st->lo, fmin(eta, st->hi));
            cr_solved(st);
            return;
        }
    }
    int inside = st->lo >= m1 && st->hi <= m2;
    cr_i64 bl = CR_D2L(st->lo), bh = CR_D2L(st->hi);
    if (st->lo_cnt == st->hi_cnt || bh - bl <= 1) {
        cr_next(st); /* no breakpoint left inside the bracket: finishes */
    } else if (inside && n_in <= CR_CAND) {
        st->ncand = n_in;
        st->want = CR_WANT_SORT;
    } else if (st->level >= CR_LEVELS) {
        cr_next(st);
    } else if (inside) {
        st->want = CR_WANT_SELECT;
    } else {
        /* the estimate missed (the root lies outside the range): the next range pass
         * bins, and if few enough copies, the keys inside the bracket (lo, hi] */
        cr_range_of(st, bl + 1, bh + 1);
    }
}

/* Uniform update from the reduced partials of one pass. */
CR_COLD void cr_step(cr_state* st, cr_part q) {
    switch (st->phase) {
        case CR_PH_TOTALS: {
            acc ctot = q.s0, kmax = q.k1;
            cr_i64 nmov = q.n1;
            st->k = q.ki;
            if (nmov == 0 || !(st->eps > 0.0)) { /* nothing moves, or eps = 0: eta = 0 */
                st->eta = 0.0;
                cr_solved(st);
            } else if (st->T >= ctot) {
                st->eta = kmax;
                st->unreach = st->T > ctot;
                cr_solved(st);
            } else {
                st->lo = 0.0;
                st->lo_C = 0.0;
                st->lo_M = q.s1;
                st->lo_cnt = q.n0;
                st->hi = kmax; /* everything movable saturated: g(hi) = ctot > T */
                st->hi_cnt = nmov;
                /* every movable element was binned; short rows were copied whole */
                st->ncand = nmov;
                st->want = nmov <= CR_CAND ? CR_WANT_SORT : CR_WANT_SELECT;
            }
            break;
        }
        case CR_PH_RANGE:
            cr_range_done(st, q);
            break;
        case CR_PH_EVAL: {
            st->it += 1;
            if (st->newton && q.n0 == st->lo_cnt) {
                /* Newton: the saturated set stopped growing, m is the exact root. */
                st->eta = st->m;
                cr_solved(st);
            } else {
                if (q.s0 + q.s1 * cr_pow(st->m, st->p, st->pm) <= st->T) {
                    st->lo = st->m;
                    st->lo_C = q.s0;
                    st->lo_M = q.s1;
                    st->lo_cnt = q.n0;
                } else {
                    st->hi = st->m;
                    st->hi_cnt = q.n0;
                }
                cr_next(st);
            }
            break;
        }
        case CR_PH_INF1:
            if (q.n1 == 0 || !(st->eps > 0.0)) { /* nothing moves, or eps = 0: eta = 0 */
                st->eta = 0.0;
                st->k = q.ki;
                cr_solved(st);
            } else if (q.ki >= 0) {
                st->eta = st->eps / q.k1;
                st->k = q.ki;
                cr_solved(st);
            } else {
                st->phase = CR_PH_INF2;
            }
            break;
        case CR_PH_INF2:
            st->eta = cr_key_of(q.k1, q.k2);
            st->k = q.ki;
            st->unreach = 1;
            cr_solved(st);
            break;
        default:
            st->phase = CR_PH_DONE;
            break;
    }
}

/* Picks the next key range from the histogram (all threads; uniform result): an
 * inclusive scan over the bins (one per thread) gives, at each bin's largest key, the
 * estimated g = C_out + sum s^p up to the bin + key^p (M_out + sum a^p above it); the
 * range is the first bin whose estimate exceeds T (the last non-empty bin if none). */
CR_COLD void cr_select(cr_state* st, CR_BUF_PARAMS, CR_HIST_PARAMS) {
    int t = (int)CR_TID;
    cr_i64 cnt = sh_hn[t];
    sh_n0[t] = sh_hc[t];
    sh_n1[t] = sh_hw[t];
    /* (key bit patterns order like the keys: the max scan runs on the doubles) */
    sh_s0[t] = sh_hmax[t] >= 0 ? CR_L2D(sh_hmax[t]) : -1.0;
    CR_BARRIER();
#pragma unroll 1
    for (int off = 1; off < CR_NB; off <<= 1) {
        cr_i64 vc = t >= off ? sh_n0[t - off] : 0;
        cr_i64 vw = t >= off ? sh_n1[t - off] : 0;
        acc vk = t >= off ? sh_s0[t - off] : -1.0;
        CR_BARRIER();
        sh_n0[t] += vc;
        sh_n1[t] += vw;
        if (vk > sh_s0[t]) sh_s0[t] = vk;
        CR_BARRIER();
    }
    cr_i64 c_le = sh_n0[t], w_gt = sh_n1[CR_NB - 1] - sh_n1[t];
    /* the largest key below this bin (-1: none), kept where the bin's count was: a range
     * starts right above it, so that no gap between bins hides the root */
    acc below = t > 0 ? sh_s0[t - 1] : -1.0;
    sh_hn[t] = below >= 0.0 ? CR_D2L(below) : -1;
    CR_BARRIER();
    cr_part q = cr_part_zero();
    if (cnt > 0) {
        acc m = CR_L2D(sh_hmax[t]);
        acc g = st->c_out + (acc)c_le / st->cscale +
                cr_pow(m, st->p, st->pm) * (st->m_out + (acc)w_gt / st->wscale);
        /* arg-max order: crossing bins first, the smallest of them; else the largest bin */
        q.k1 = g > st->T ? 1.0 : 0.0;
        q.k2 = g > st->T ? 0.0 : (acc)t;
        q.ki = t;
    }
    q = cr_reduce(CR_BUFS, q);
    cr_i64 b = q.ki;
    acc wb = (acc)sh_hw[b] / st->wscale, cb = (acc)sh_hc[b] / st->cscale;
    cr_i64 lo = sh_hn[b] >= 0 ? sh_hn[b] + 1 : st->r_lo, hi = sh_hmax[b] + 1;
    CR_BARRIER(); /* the next pass empties the histogram */
    st->wscale = wb > 0.0 ? CR_FIX / wb : st->wscale * CR_FIX;
    st->cscale = cb > 0.0 ? CR_FIX / cb : st->cscale * CR_FIX;
    cr_range_of(st, lo, hi);
}

/* Sorts the first n (<= CR_CAND) candidates in shared memory by value, (s, a) (bitonic,
 * all threads): a canonical order (equal candidates are interchangeable), so that sums
 * over them do not depend on the order the atomics stored them in. */
CR_COLD void cr_sort_cands(cr_i64 n, CR_HIST_PARAMS) {
    cr_i64 n2 = 2;
    while (n2 < n) n2 <<= 1;
    for (cr_i64 j = CR_TID; j < n2; j += CR_NB) {
        if (j >= n) {
            sh_cs[j] = CR_INF;
            sh_ca[j] = CR_INF;
        }
    }
    CR_BARRIER();
#pragma unroll 1
    for (cr_i64 k = 2; k <= n2; k <<= 1) {
#pragma unroll 1
        for (cr_i64 jj = k >> 1; jj > 0; jj >>= 1) {
            for (cr_i64 i = CR_TID; i < n2; i += CR_NB) {
                cr_i64 l = i ^ jj;
                if (l > i) {
                    acc si = sh_cs[i], ai = sh_ca[i], sl = sh_cs[l], al = sh_ca[l];
                    int gt = si > sl || (si == sl && ai > al);
                    if (gt == ((i & k) == 0)) {
                        sh_cs[i] = sl;
                        sh_ca[i] = al;
                        sh_cs[l] = si;
                        sh_ca[l] = ai;
                    }
                }
            }
            CR_BARRIER();
        }
    }
}

/* Sorts the st->ncand candidates (cr_sort_cands); then the solve continues over them from
 * the bracket. */
CR_COLD void cr_sort(cr_state* st, CR_HIST_PARAMS) {
    cr_sort_cands(st->ncand, CR_HIST);
    st->want = CR_WANT_NONE;
    st->src = 1;
    cr_next(st);
}

/* This thread's partials of one step over the shared candidates. */
CR_DEVICE cr_part cr_cand_part(const cr_state* st, CR_HIST_PARAMS) {
    cr_part q = cr_part_zero();
    for (cr_i64 j = CR_TID; j < st->ncand; j += CR_NB) {
        cr_el e = cr_el_zero();
        e.s = sh_cs[j];
        e.a = sh_ca[j];
        e.mv = 1;
        cr_accumulate(&q, st, e, j);
    }
    return q;
}

/* The reduced partials of one step, and what follows it (all threads). cands: the step ran
 * over candidates outside the shared ones (the split step's), like st->src: the sums
 * outside them are added, and no pass over the row is counted. */
CR_DEVICE void cr_advance(cr_state* st, cr_part q, int cands, CR_BUF_PARAMS, CR_HIST_PARAMS) {
    q = cr_reduce(CR_BUFS, q);
    if (st->src || cands) {
        q.s0 += st->c_out;
        q.s1 += st->m_out;
        q.n0 += st->n_out;
    } else {
        st->passes += 1;
    }
    cr_step(st, q);
    if (st->want == CR_WANT_SELECT) {
        cr_select(st, CR_BUFS, CR_HIST);
    } else if (st->want == CR_WANT_SORT) {
        cr_sort(st, CR_HIST);
    }
}

/* A row's state before its first pass: with finite p, the histogram's window from the
 * sample e0 (this thread's first element, valid when CR_TID < n). */
CR_DEVICE cr_state cr_begin(acc eps, acc p, int pm, cr_el e0, cr_i64 n, CR_BUF_PARAMS) {
    cr_state st = cr_start(eps, p, pm);
    if (pm != CR_PM_INF) cr_sample(&st, e0, CR_TID < n, n, CR_BUFS);
    return st;
}

/* Continues the solve of one row with this block until it is done. Every thread of the
 * block must call it; all of them return the same state. With check, the first pass
 * (which reads every element) also ORs each element's error bits into *bad. When has_e0,
 * e0 is this thread's first element (already read for the sample): the first pass uses
 * it instead of reading it again. */
CR_DEVICE cr_state cr_solve(cr_row r, cr_state st, cr_el e0, int has_e0, int check, int* bad,
                            CR_BUF_PARAMS, CR_HIST_PARAMS) {
    while (st.phase != CR_PH_DONE) {
        cr_part q;
        if (st.src) {
            q = cr_cand_part(&st, CR_HIST);
        } else {
            q = cr_part_zero();
            int hist = st.phase == CR_PH_TOTALS || st.phase == CR_PH_RANGE;
            if (hist) cr_hist_clear(CR_HIST);
            int first = st.passes == 0;
            int reuse = first && has_e0;
            CR_ROUNDS(r, 0, r.n, reuse, i, e_ld, {
                cr_el e = reuse && i == CR_TID ? e0 : e_ld;
                if (first && check) *bad |= cr_check_el(e);
                if (hist) cr_hist_el(&q, &st, e, i, CR_HIST);
                cr_accumulate(&q, &st, e, i);
            })
        }
        cr_advance(&st, q, 0, CR_BUFS, CR_HIST);
    }
    return st;
}

/* Runs the solve for one row (see cr_solve). */
CR_DEVICE cr_state cr_run_row(cr_row r, acc eps, acc p, int pm, int check, int* bad,
                              CR_BUF_PARAMS, CR_HIST_PARAMS) {
    /* the sample is the first pass's first element of each thread, kept in registers */
    cr_el e0 = cr_el_zero();
    if (CR_TID < r.n) e0 = cr_load(r, CR_TID);
    cr_state st = cr_begin(eps, p, pm, e0, r.n, CR_BUFS);
    return cr_solve(r, st, e0, 1, check, bad, CR_BUFS, CR_HIST);
}

/* The state of a row whose eta the forward already found (the VJP's given eta): no
 * solve. The breakpoint index k and the unreachable flag are recovered by cr_vjp_pass. */
CR_DEVICE cr_state cr_given(acc eps, acc p, int pm, acc eta) {
    cr_state st = cr_start(eps, p, pm);
    st.eta = eta;
    st.phase = CR_PH_DONE;
    return st;
}

/* After the solve (VJP only): M = sum of a^p and sum of ybar * d over the unsaturated
 * set, stored in st->msol and st->ybar_d. With a given eta (find_k, finite p only) the
 * same pass recovers what the solve leaves behind: the breakpoint index k (arg-max of
 * the key over the movable elements, in the TOTALS pass's order) and, from the total
 * C = sum of s^p, whether eps reaches past every breakpoint (T >= C). Such a row's eta
 * is the largest breakpoint exactly (which a float32 eta may round below), so it is
 * set to that and every movable element counts as saturated, as after the solve.
 * (Kept out of the solve's state machine: PoCL's work-group compiler fails on that
 * variant.) */
/* Element i of the VJP's sums pass (see cr_vjp_pass). */
CR_DEVICE void cr_vjp_el(cr_part* q, const cr_state* st, cr_el e, acc yb, int has_ybar,
                         int find_k, cr_i64 i) {
    if (!e.mv) return;
    if (find_k) {
        q->n1 += 1;
        q->s2 += cr_pow(e.s, st->p, st->pm);
        cr_part_argmax(q, cr_key(e), 0.0, i);
    }
    if (!(e.s <= st->eta * e.a)) {
        if (st->pm != CR_PM_INF) q->s0 += cr_pow(e.a, st->p, st->pm);
        if (has_ybar) q->s1 += yb * e.d;
    }
}

/* The VJP pass's reduced sums into the state (see cr_vjp_pass). */
CR_DEVICE void cr_vjp_sums(cr_state* st, cr_part q, int find_k) {
    st->msol = q.s0;
    st->ybar_d = q.s1;
    if (find_k) {
        st->k = q.ki;
        if (q.n1 > 0 && st->eps > 0.0 && st->T >= q.s2) {
            st->eta = q.k1;
            st->unreach = st->T > q.s2;
            st->msol = 0.0;
            st->ybar_d = 0.0;
        }
    }
}

CR_DEVICE void cr_vjp_pass(cr_row r, cr_state* st, const CR_GLOBAL real* ybar_row, int has_ybar,
                           int find_k, int check, int* bad, CR_BUF_PARAMS) {
    cr_part q = cr_part_zero();
    CR_ROUNDS(r, 0, r.n, 0, i, e, {
        if (check) *bad |= cr_check_el(e);
        cr_vjp_el(&q, st, e, has_ybar ? CR_ACC(ybar_row[i]) : 0.0, has_ybar, find_k, i);
    })
    q = cr_reduce(CR_BUFS, q);
    cr_vjp_sums(st, q, find_k);
}
/* ----------------------------------------------------------------- gradients */

typedef struct {
    acc eta, G, H, kc;
    int mode;
    cr_i64 k;
} cr_info;

/* The per-row coefficients clipresc_vjp / clipresc_split_vjp_coeffs wrote to rowinfo. */
CR_DEVICE cr_info cr_info_of(const CR_GLOBAL acc* ri) {
    cr_info f;
    f.eta = ri[0];
    f.G = ri[1];
    f.H = ri[2];
    f.kc = ri[3];
    f.mode = (int)ri[4];
    f.k = (cr_i64)ri[5];
    return f;
}

/* Per-row coefficients of the closed-form VJP (DESIGN.md section 3), given the total
 * cotangent of eta (etabar) and M = sum of a^p over the unsaturated set at the solution.
 *   GENERAL: G = etabar / D, H = etabar * eta / M with D = eta^(p-1) M;
 *   INF:     kc = -eta * etabar / a_k (only delta_k gets the eta part);
 *   LAST:    kc = etabar / a_k (eta = s_k / a_k: x_k, delta_k and k's bound);
 *   ZERO:    no eta part (eps = 0: only eps gets one).
 * Conventions: at eps = 0 the right derivative in eps (M^(-1/p) for finite p); s^(p-1)
 * at s = 0 with p < 1 is taken as 0; ties follow "saturated". */
CR_DEVICE cr_info cr_coeffs(const cr_state* s, acc etabar, acc ak, acc* epsbar) {
    acc eps = s->eps, msol = s->msol, p = s->p;
    int pm = s->pm;
    cr_info f;
    f.eta = s->eta;
    f.G = 0.0;
    f.H = 0.0;
    f.kc = 0.0;
    f.mode = CR_MODE_ZERO;
    f.k = s->k;
    *epsbar = 0.0;
    if (s->k < 0) return f;
    if (!(eps > 0.0)) {
        if (pm == CR_PM_INF) {
            *epsbar = etabar / ak;
        } else if (msol > 0.0) {
            *epsbar = etabar * cr_root(1.0 / msol, p, pm);
        }
        return f;
    }
    if (pm == CR_PM_INF) {
        if (!s->unreach) {
            f.mode = CR_MODE_INF;
            f.kc = -s->eta * etabar / ak;
            *epsbar = etabar / ak;
        } else {
            f.mode = CR_MODE_LAST;
            f.kc = etabar / ak;
        }
        return f;
    }
    if (!(msol > 0.0)) {
        f.mode = CR_MODE_LAST;
        f.kc = etabar / ak;
        return f;
    }
    f.mode = CR_MODE_GENERAL;
    f.G = etabar / (cr_powm1(s->eta, p, pm) * msol);
    f.H = etabar * s->eta / msol;
    *epsbar = etabar * cr_powm1(eps / s->eta, p, pm) / msol;
    return f;
}

/* Cotangents of one element: y = clip(x + eta d, l, u) with cotangent yb, plus the
 * eta part described by f. Elements with d == 0 move like interior points
 * (xbar = yb, deltabar = yb * eta). */
CR_DEVICE void cr_elem_grad(cr_el e, acc yb, cr_info f, int is_k, acc p, int pm, acc* xb,
                            acc* db, acc* lb, acc* ub) {
    acc gx = 0.0, gd = 0.0, gl = 0.0, gu = 0.0;
    acc sg = e.d > 0.0 ? 1.0 : (e.d < 0.0 ? -1.0 : 0.0);
    int sat = e.mv && e.s <= f.eta * e.a;
    if (!sat) {
        gx = yb;
        gd = yb * f.eta;
        if (e.mv && f.mode == CR_MODE_GENERAL) gd -= f.H * cr_powm1(e.a, p, pm) * sg;
    } else {
        if (e.d > 0.0) {
            gu = yb;
        } else {
            gl = yb;
        }
        if (f.mode == CR_MODE_GENERAL) {
            acc q = (e.s > 0.0 || p >= 1.0) ? cr_powm1(e.s, p, pm) : 0.0;
            gx += sg * f.G * q;
            if (e.d > 0.0) {
                gu -= f.G * q;
            } else {
                gl += f.G * q;
            }
        }
    }
    if (is_k) {
        if (f.mode == CR_MODE_INF) {
            gd += f.kc * sg;
        } else if (f.mode == CR_MODE_LAST) {
            gx -= sg * f.kc;
            gd -= f.eta * sg * f.kc;
            if (e.d > 0.0) {
                gu += f.kc;
            } else {
                gl -= f.kc;
            }
        }
    }
    *xb = gx;
    *db = gd;
    *lb = gl;
    *ub = gu;
}

/* The cotangents of elements [i0, i1) of a row (outputs at off + i): the VJP's last pass,
 * one-block and split. (The loads in rounds, as the summing passes': the x and d of
 * CR_VW elements in flight per thread.) */
CR_DEVICE void cr_grad_range(cr_row r, const CR_GLOBAL real* ybar_row, int has_ybar, cr_info f,
                             acc p, int pm, cr_i64 i0, cr_i64 i1, cr_i64 off,
                             CR_GLOBAL real* xbar, CR_GLOBAL real* dbar, CR_GLOBAL real* lbar,
                             int lbar_full, CR_GLOBAL real* ubar, int ubar_full) {
    CR_ROUNDS(r, i0, i1, 0, i, e, {
        acc yb = has_ybar ? CR_ACC(ybar_row[i]) : 0.0;
        acc gx, gd, gl, gu;
        cr_elem_grad(e, yb, f, i == f.k, p, pm, &gx, &gd, &gl, &gu);
        xbar[off + i] = CR_REAL(gx);
        dbar[off + i] = CR_REAL(gd);
        if (lbar_full) lbar[off + i] = CR_REAL(gl);
        if (ubar_full) ubar[off + i] = CR_REAL(gu);
    })
}

/* ----------------------------------------------------------------- kernels */

/* y = clip(x + eta d, l, u) of one element; saturated elements get the bound exactly. */
CR_DEVICE real cr_apply(cr_el e, acc eta) {
    acc v;
    if (e.mv && e.s <= eta * e.a) {
        v = e.d > 0.0 ? e.hi : e.lo;
    } else {
        v = fmin(fmax(e.x + eta * e.d, e.lo), e.hi);
    }
    return CR_REAL(v);
}

/* 16 bytes of consecutive elements: one vector load or store. */
typedef struct CR_ALIGN16 {
    real v[16 / sizeof(real)];
} cr_vec;

/* The first index in [i0, i1) from which x, d and y (row pointers) all lie on 16-byte
 * boundaries, or i1 when their offsets differ (then no vector access). */
CR_DEVICE cr_i64 cr_vec_start(const CR_GLOBAL real* x, const CR_GLOBAL real* d,
                              const CR_GLOBAL real* y, cr_i64 i0, cr_i64 i1) {
    cr_i64 ax = (cr_i64)(x + i0) & 15, ad = (cr_i64)(d + i0) & 15, ay = (cr_i64)(y + i0) & 15;
    if (ax != ad || ax != ay || ax % (cr_i64)sizeof(real) != 0) return i1;
    cr_i64 h = i0 + ((16 - ax) & 15) / (cr_i64)sizeof(real);
    return h < i1 ? h : i1;
}

/* y[i] = clip(x + eta d, l, u) for i in [i0, i1) of a row (y: the row's start). With
 * scalar bounds and x, d, y sharing their alignment, the middle goes as 16-byte vector
 * loads and stores, two vectors of each array per thread in flight; the unaligned head
 * and the tail element by element. Element-wise: the same values whatever the access. */
CR_DEVICE void cr_apply_range(cr_row r, CR_GLOBAL real* y, cr_i64 i0, cr_i64 i1, acc eta) {
    cr_i64 h = r.lo_arr || r.hi_arr ? i1 : cr_vec_start(r.x, r.d, y, i0, i1);
    for (cr_i64 i = i0 + CR_TID; i < h; i += CR_NB) y[i] = cr_apply(cr_load(r, i), eta);
    cr_i64 nv = (i1 - h) / CR_VW;
    const CR_GLOBAL cr_vec* xv = (const CR_GLOBAL cr_vec*)(r.x + h);
    const CR_GLOBAL cr_vec* dv = (const CR_GLOBAL cr_vec*)(r.d + h);
    CR_GLOBAL cr_vec* yv = (CR_GLOBAL cr_vec*)(y + h);
    for (cr_i64 v0 = CR_TID; v0 < nv; v0 += 2 * CR_NB) {
        cr_vec a[2], b[2];
        _Pragma("unroll") for (int k = 0; k < 2; ++k) {
            if (v0 + k * CR_NB < nv) {
                a[k] = xv[v0 + k * CR_NB];
                b[k] = dv[v0 + k * CR_NB];
            }
        }
        _Pragma("unroll") for (int k = 0; k < 2; ++k) {
            if (v0 + k * CR_NB < nv) {
                cr_vec o;
                _Pragma("unroll") for (int u = 0; u < CR_VW; ++u) {
                    cr_raw w = cr_raw_zero();
                    w.x = a[k].v[u];
                    w.d = b[k].v[u];
                    o.v[u] = cr_apply(cr_el_of(r, w), eta);
                }
                yv[v0 + k * CR_NB] = o;
            }
        }
    }
    for (cr_i64 i = h + nv * CR_VW + CR_TID; i < i1; i += CR_NB)
        y[i] = cr_apply(cr_load(r, i), eta);
}

#define CR_COMMON_PARAMS                                                                   \
    const CR_GLOBAL real *x, const CR_GLOBAL real *d, const CR_GLOBAL acc *eps_p,           \
        cr_i64 eps_es, int eps_arr, acc eps_v, const CR_GLOBAL real *lo_p, cr_i64 lo_rs,    \
        cr_i64 lo_es, int lo_arr, acc lo_v, const CR_GLOBAL real *hi_p, cr_i64 hi_rs,       \
        cr_i64 hi_es, int hi_arr, acc hi_v, cr_i64 B, cr_i64 n, acc p, int pm

#define CR_MAKE_ROW(row) \
    cr_make_row(x, d, lo_p, lo_rs, lo_es, lo_arr, lo_v, hi_p, hi_rs, hi_es, hi_arr, hi_v, n, row)



/* Forward: eta (and the unreachable flag) per row; optionally the fused apply
 * y = clip(x + eta d, l, u) (saturated elements get the bound exactly) and the number
 * of passes over each row. With check, the first pass validates every element and each
 * row's eps, and the CR_ERR_* bits found (CR_ERR_UNREACH for unreachable rows) are ORed
 * into *err, which the host zeroes before and reads once after. */
CR_KERNEL clipresc_forward(CR_COMMON_PARAMS, CR_GLOBAL real* eta_out,
                           CR_GLOBAL unsigned char* flag_out, CR_GLOBAL real* y, int write_y,
                           CR_GLOBAL int* passes_out, int write_passes, CR_GLOBAL int* err,
                           int check CR_TRAFFIC_PARAM) {
    CR_DECLARE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_row r = CR_MAKE_ROW(row);
        acc eps = eps_arr ? eps_p[row * eps_es] : eps_v;
        int bad = 0;
        cr_state s = cr_run_row(r, eps, p, pm, check, &bad, CR_BUFS, CR_HIST);
        CR_TRAFFIC(s.passes * n * CR_EL_BYTES(r) + (eps_arr ? 8 : 0),
                   sizeof(real) + 1 + (write_passes ? 4 : 0));
        if (write_y) CR_TRAFFIC(n * CR_EL_BYTES(r), n * sizeof(real));
        if (CR_TID == 0) {
            eta_out[row] = CR_REAL(s.eta);
            flag_out[row] = (unsigned char)s.unreach;
            if (write_passes) passes_out[row] = s.passes;
            if (check) bad |= cr_check_eps(eps) | (s.unreach ? CR_ERR_UNREACH : 0);
        }
        if (bad) CR_ATOMIC_OR(err, bad);
        if (write_y) cr_apply_range(r, y + row * n, 0, n, s.eta);
    }
}

/* Backward: the closed-form VJP for perturb (cotangent ybar of y) and/or scale
 * (cotangent etabar of eta). With has_eta the row's eta is the forward's (eta_in, B
 * values in the element type) and, for finite p, nothing is solved: one pass gathers the
 * sums and the breakpoint index, one writes the cotangents. Without it the row is
 * solved first (for p = inf always: that solve is a single arg-max pass). Writes xbar, deltabar (B, n), epsbar (B,), the bound
 * cotangents when the bound is a full (B, n) array, and (optionally) the per-row
 * coefficients to rowinfo (B x CR_ROWINFO doubles) for clipresc_bound_grad_shared. */
CR_KERNEL clipresc_vjp(CR_COMMON_PARAMS, const CR_GLOBAL real* ybar, int has_ybar,
                       const CR_GLOBAL real* etabar_p, int has_etabar, CR_GLOBAL real* xbar,
                       CR_GLOBAL real* dbar, CR_GLOBAL real* epsbar, CR_GLOBAL real* lbar,
                       int lbar_full, CR_GLOBAL real* ubar, int ubar_full,
                       CR_GLOBAL acc* rowinfo, int write_rowinfo, const CR_GLOBAL real* eta_in,
                       int has_eta, CR_GLOBAL int* err, int check CR_TRAFFIC_PARAM) {
    CR_DECLARE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_row r = CR_MAKE_ROW(row);
        acc eps = eps_arr ? eps_p[row * eps_es] : eps_v;
        const CR_GLOBAL real* ybar_row = ybar + (has_ybar ? row * n : 0);
        /* p = inf: the solve is the one arg-max pass that recovering k would take, and it
         * gives eta exactly; so a given eta is used for finite p only. */
        int given = has_eta && pm != CR_PM_INF;
        cr_state s;
        int bad = 0;
        if (given) {
            s = cr_given(eps, p, pm, CR_ACC(eta_in[row]));
        } else {
            s = cr_run_row(r, eps, p, pm, check, &bad, CR_BUFS, CR_HIST);
        }
        cr_vjp_pass(r, &s, ybar_row, has_ybar, given, check && given, &bad, CR_BUFS);
        /* solve passes, the sums pass, the cotangent pass (which rereads d[k]) */
        CR_TRAFFIC((s.passes + 2) * n * (CR_EL_BYTES(r) + (has_ybar ? sizeof(real) : 0)) +
                       (given ? sizeof(real) : 0) + (has_etabar ? sizeof(real) : 0) +
                       (eps_arr ? 8 : 0) + (s.k >= 0 ? sizeof(real) : 0),
                   ((2 + lbar_full + ubar_full) * n + 1) * sizeof(real) +
                       (write_rowinfo ? 8 * CR_ROWINFO : 0));
        if (check && CR_TID == 0) bad |= cr_check_eps(eps);
        if (bad) CR_ATOMIC_OR(err, bad);
        /* total cotangent of eta: the given one plus sum over unsaturated of ybar * d */
        acc eb = s.ybar_d + (has_etabar ? CR_ACC(etabar_p[row]) : 0.0);
        acc ak = s.k >= 0 ? fabs(CR_ACC(r.d[s.k])) : 1.0;
        acc eps_bar;
        cr_info f = cr_coeffs(&s, eb, ak, &eps_bar);

        cr_grad_range(r, ybar_row, has_ybar, f, p, pm, 0, n, row * n, xbar, dbar, lbar, lbar_full,
                      ubar, ubar_full);
        if (CR_TID == 0) {
            epsbar[row] = CR_REAL(eps_bar);
            if (write_rowinfo) {
                CR_GLOBAL acc* ri = rowinfo + row * CR_ROWINFO;
                ri[0] = f.eta;
                ri[1] = f.G;
                ri[2] = f.H;
                ri[3] = f.kc;
                ri[4] = (acc)f.mode;
                ri[5] = (acc)f.k;
            }
        }
    }
}

/* Cotangents of bounds shared by every row (shape (n,)): one thread per column sums
 * the rows in order (deterministic, no atomics), using the rowinfo written by
 * clipresc_vjp. Launch with any number of CLIPRESC_BLOCK-sized blocks. */
CR_KERNEL clipresc_bound_grad_shared(CR_COMMON_PARAMS, const CR_GLOBAL real* ybar,
                                     int has_ybar, const CR_GLOBAL acc* rowinfo,
                                     CR_GLOBAL real* lbar, int lbar_on, CR_GLOBAL real* ubar,
                                     int ubar_on CR_TRAFFIC_PARAM) {
    for (cr_i64 j = CR_BID * CR_NB + CR_TID; j < n; j += CR_NBLOCKS * CR_NB) {
        acc sl = 0.0, su = 0.0;
        for (cr_i64 row = 0; row < B; ++row) {
            cr_row r = CR_MAKE_ROW(row);
            cr_el e = cr_load(r, j);
            cr_info f = cr_info_of(rowinfo + row * CR_ROWINFO);
            acc yb = has_ybar ? CR_ACC(ybar[row * n + j]) : 0.0;
            acc gx, gd, gl, gu;
            cr_elem_grad(e, yb, f, j == f.k, p, pm, &gx, &gd, &gl, &gu);
            sl += gl;
            su += gu;
        }
        if (lbar_on) lbar[j] = CR_REAL(sl);
        if (ubar_on) ubar[j] = CR_REAL(su);
    }
}

/* ----------------------------------------------------------------- rows over many blocks */

/* A long row cut into G segments of seg elements (a multiple of CLIPRESC_BLOCK), so that
 * a small batch still fills the GPU. Between launches the solve's state lives in global
 * memory (states: CR_STATE_BYTES per row):
 *   clipresc_split_start   a block per row: the state and the histogram's window;
 *   clipresc_split_pass    a block per segment: one pass over it (partials, histogram,
 *                          candidates) for the rows still solving;
 *   clipresc_split_step    a block per row: merges the segments' results in a fixed order
 *                          (partials summed in segment order, integer histograms, the
 *                          candidates sorted by value) and takes the step; finishes on the
 *                          candidates in shared memory when it can, and takes further
 *                          RANGE steps over the segments' candidates in global memory
 *                          (no pass over the row) while these hold every element of the
 *                          range (see clipresc_split_step);
 *   clipresc_split_finish  a block per row: whatever a fixed number of (pass, step) rounds
 *                          left unsolved, with the one-block solve; writes the outputs;
 *   clipresc_split_apply   a block per segment: y = clip(x + eta d, l, u).
 * The host launches a fixed sequence (no host synchronisation); a round over rows already
 * solved returns at once. Scratch: parts (B G cr_part), hists (B G 4 CR_NB longs), cands
 * (B G CR_CAND cr_cand: each segment's own slots), ncand (B G ints: each segment's count,
 * CR_CAND + 1 when it found more than its slots hold: then it kept none). */

#define CR_STATE_BYTES 512
#define CR_PART_BYTES 72
#define CR_CAND_BYTES 16
typedef struct {
    acc s, a;
} cr_cand;
/* (compile-time checks of the sizes the host allocates) */
typedef char cr_state_fits[sizeof(cr_state) <= CR_STATE_BYTES ? 1 : -1];
typedef char cr_part_size[sizeof(cr_part) == CR_PART_BYTES ? 1 : -1];
typedef char cr_cand_size[sizeof(cr_cand) == CR_CAND_BYTES ? 1 : -1];

CR_KERNEL clipresc_split_start(CR_COMMON_PARAMS, CR_GLOBAL cr_state* states CR_TRAFFIC_PARAM) {
    CR_DECLARE_REDUCE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_row r = CR_MAKE_ROW(row);
        acc eps = eps_arr ? eps_p[row * eps_es] : eps_v;
        cr_el e0 = cr_el_zero();
        if (CR_TID < n) e0 = cr_load(r, CR_TID);
        cr_state st = cr_begin(eps, p, pm, e0, n, CR_BUFS);
        CR_TRAFFIC((n < CR_NB ? n : CR_NB) * CR_EL_BYTES(r) + (eps_arr ? 8 : 0),
                   sizeof(cr_state));
        if (CR_TID == 0) states[row] = st;
    }
}

CR_KERNEL clipresc_split_pass(CR_COMMON_PARAMS, const CR_GLOBAL cr_state* states,
                              CR_GLOBAL cr_part* parts, CR_GLOBAL cr_i64* hists,
                              CR_GLOBAL cr_cand* cands, CR_GLOBAL int* ncand, cr_i64 G,
                              cr_i64 seg, CR_GLOBAL int* err, int check CR_TRAFFIC_PARAM) {
    CR_DECLARE_BUFS;
    for (cr_i64 w = CR_BID; w < B * G; w += CR_NBLOCKS) {
        cr_i64 row = w / G, i0 = (w % G) * seg;
        cr_i64 i1 = n - i0 < seg ? n : i0 + seg;
        cr_state st = states[row];
        CR_TRAFFIC(sizeof(cr_state), 0);
        if (st.phase == CR_PH_DONE || st.src) continue; /* (uniform: one state per block) */
        cr_row r = CR_MAKE_ROW(row);
        int hist = st.phase == CR_PH_TOTALS || st.phase == CR_PH_RANGE;
        int first = check && st.passes == 0, bad = 0;
        if (hist) cr_hist_clear(CR_HIST);
        cr_part q = cr_part_zero();
        CR_ROUNDS(r, i0, i1, 0, i, e, {
            if (first) bad |= cr_check_el(e);
            if (hist) cr_hist_el(&q, &st, e, i, CR_HIST);
            cr_accumulate(&q, &st, e, i);
        })
        q = cr_reduce(CR_BUFS, q);
        CR_TRAFFIC((i1 - i0) * CR_EL_BYTES(r), CR_PART_BYTES);
        if (CR_TID == 0) parts[w] = q;
        if (hist) {
            int t = (int)CR_TID;
            CR_GLOBAL cr_i64* h = hists + w * 4 * CR_NB;
            h[t] = sh_hw[t];
            h[CR_NB + t] = sh_hc[t];
            h[2 * CR_NB + t] = sh_hn[t];
            h[3 * CR_NB + t] = sh_hmax[t];
            /* this segment's candidates into its own slots, sorted by value (a canonical
             * order: the step may sum over them), and their count; none when its shared
             * memory could not keep them all (the step uses a segment's all or none) */
            cr_i64 cnt = sh_nc[0];
            if (cnt <= CR_CAND) cr_sort_cands(cnt, CR_HIST);
            cr_i64 kept = cnt <= CR_CAND ? cnt : 0;
            for (cr_i64 j = t; j < kept; j += CR_NB) {
                CR_GLOBAL cr_cand* c = cands + w * CR_CAND + j;
                c->s = sh_cs[j];
                c->a = sh_ca[j];
            }
            if (t == 0) ncand[w] = (int)(cnt <= CR_CAND ? cnt : CR_CAND + 1);
            CR_TRAFFIC(0, 4 * CR_NB * 8 + kept * CR_CAND_BYTES + 4);
            CR_BARRIER();
        }
        if (bad) CR_ATOMIC_OR(err, bad);
    }
}

/* One RANGE step over the segments' candidates of a row (slots of G segments from cs, counts
 * in cn), which hold every movable element in the key range they were gathered from:
 * thread t sums the candidates of segments t, t + CR_NB, ... in their sorted order (so the
 * partials are deterministic) into the histogram, the shared candidates and the RANGE
 * partials, which cr_advance completes with the sums outside that range. */
CR_DEVICE void cr_cands_range(cr_state* st, const CR_GLOBAL cr_cand* cs, const CR_GLOBAL int* cn,
                              cr_i64 G, CR_BUF_PARAMS, CR_HIST_PARAMS) {
    cr_hist_clear(CR_HIST);
    cr_part q = cr_part_zero();
    for (cr_i64 sg = CR_TID; sg < G; sg += CR_NB) {
        cr_i64 cnt = cn[sg];
        for (cr_i64 j = 0; j < cnt; ++j) {
            cr_el e = cr_el_zero();
            e.s = cs[sg * CR_CAND + j].s;
            e.a = cs[sg * CR_CAND + j].a;
            e.mv = 1;
            cr_hist_el(&q, st, e, 0, CR_HIST);
        }
    }
    cr_advance(st, q, 1, CR_BUFS, CR_HIST);
}

/* A row's step. After a pass that binned (TOTALS, RANGE) the segments' candidates hold
 * every movable element with a key in the pass's range [c_lo, c_hi) ([0, inf) for TOTALS)
 * unless a segment found more than its CR_CAND slots: then, while the solve's next range
 * lies within that one, its RANGE step runs over those candidates instead of over the row
 * (a long row's crossing bin, binned finer, costs no further pass). The sums outside the
 * candidates are the pass's exact ones (the c_out, m_out, n_out its step leaves; zero
 * after TOTALS). */
CR_KERNEL clipresc_split_step(CR_COMMON_PARAMS, CR_GLOBAL cr_state* states,
                              const CR_GLOBAL cr_part* parts, const CR_GLOBAL cr_i64* hists,
                              const CR_GLOBAL cr_cand* cands, const CR_GLOBAL int* ncand,
                              cr_i64 G CR_TRAFFIC_PARAM) {
    CR_DECLARE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_state st = states[row];
        CR_TRAFFIC(sizeof(cr_state), 0);
        if (st.phase == CR_PH_DONE) continue;
        int t = (int)CR_TID;
        /* each thread sums its segments in order, then the fixed tree of cr_reduce */
        cr_part q = cr_part_zero();
        for (cr_i64 sg = t; sg < G; sg += CR_NB) q = cr_part_add(q, parts[row * G + sg]);
        CR_TRAFFIC(G * CR_PART_BYTES, sizeof(cr_state));
        int hist = st.phase == CR_PH_TOTALS || st.phase == CR_PH_RANGE;
        cr_i64 c_lo = st.phase == CR_PH_RANGE ? st.r_lo : 0;
        cr_i64 c_hi = st.phase == CR_PH_RANGE ? st.r_hi : CR_I64_MAX;
        const CR_GLOBAL cr_cand* cs = cands + row * G * CR_CAND;
        const CR_GLOBAL int* cn = ncand + row * G;
        int all_kept = 0;
#ifdef CLIPRESC_COUNT_TRAFFIC
        cr_i64 total = 0; /* (the candidates the segments kept) */
#endif
        if (hist) {
            cr_i64 hw = 0, hc = 0, hn = 0, hm = -1;
            for (cr_i64 sg = 0; sg < G; ++sg) {
                const CR_GLOBAL cr_i64* h = hists + (row * G + sg) * 4 * CR_NB;
                hw += h[t];
                hc += h[CR_NB + t];
                hn += h[2 * CR_NB + t];
                hm = h[3 * CR_NB + t] > hm ? h[3 * CR_NB + t] : hm;
            }
            sh_hw[t] = hw;
            sh_hc[t] = hc;
            sh_hn[t] = hn;
            sh_hmax[t] = hm;
            if (t == 0) sh_nc[0] = 0;
            CR_BARRIER();
            /* the segments' candidates into shared memory (any order: cr_sort orders
             * them; used when the step finds few enough), and whether every segment kept
             * all of its own (sh_nc's bits from 40 count the segments that did not) */
            for (cr_i64 sg = t; sg < G; sg += CR_NB) {
                cr_i64 cnt = cn[sg];
                cr_i64 kept = cnt <= CR_CAND ? cnt : 0;
                cr_i64 at = CR_LADD64(sh_nc, kept + (cnt <= CR_CAND ? 0 : (cr_i64)1 << 40));
                at &= ((cr_i64)1 << 40) - 1;
                for (cr_i64 j = 0; j < kept && at + j < CR_CAND; ++j) {
                    sh_cs[at + j] = cs[sg * CR_CAND + j].s;
                    sh_ca[at + j] = cs[sg * CR_CAND + j].a;
                }
            }
            CR_BARRIER();
            all_kept = (sh_nc[0] >> 40) == 0;
#ifdef CLIPRESC_COUNT_TRAFFIC
            total = sh_nc[0] & (((cr_i64)1 << 40) - 1);
#endif
            CR_BARRIER();
            /* (the copies: at most CR_CAND candidates) */
            CR_TRAFFIC(G * 4 * CR_NB * 8 + G * 4 +
                           (total < CR_CAND ? total : CR_CAND) * CR_CAND_BYTES,
                       0);
        }
        cr_advance(&st, q, 0, CR_BUFS, CR_HIST);
        /* the exact sums outside [c_lo, c_hi): left by the pass's step (zero after TOTALS) */
        acc c_out = st.c_out, m_out = st.m_out;
        cr_i64 n_out = st.n_out;
        while (all_kept && st.phase == CR_PH_RANGE && st.r_lo >= c_lo && st.r_hi <= c_hi) {
            st.c_out = c_out;
            st.m_out = m_out;
            st.n_out = n_out;
            cr_cands_range(&st, cs, cn, G, CR_BUFS, CR_HIST);
            CR_TRAFFIC(G * 4 + total * CR_CAND_BYTES, 0);
        }
        while (st.src && st.phase != CR_PH_DONE) {
            q = cr_cand_part(&st, CR_HIST);
            cr_advance(&st, q, 0, CR_BUFS, CR_HIST);
        }
        if (t == 0) states[row] = st;
    }
}

CR_KERNEL clipresc_split_finish(CR_COMMON_PARAMS, CR_GLOBAL cr_state* states,
                                CR_GLOBAL real* eta_out, CR_GLOBAL unsigned char* flag_out,
                                CR_GLOBAL int* passes_out, int write_passes, CR_GLOBAL int* err,
                                int check, int row_checks CR_TRAFFIC_PARAM) {
    CR_DECLARE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_row r = CR_MAKE_ROW(row);
        cr_state st = states[row];
        int bad = 0, solved_here = st.phase != CR_PH_DONE;
        if (solved_here) st = cr_solve(r, st, cr_el_zero(), 0, check, &bad, CR_BUFS, CR_HIST);
        /* (the passes this kernel made: the count before it is still in states[row]) */
        CR_TRAFFIC(sizeof(cr_state) + (st.passes - states[row].passes) * n * CR_EL_BYTES(r),
                   sizeof(real) + 1 + (write_passes ? 4 : 0) + sizeof(cr_state));
        if (CR_TID == 0) {
            eta_out[row] = CR_REAL(st.eta);
            flag_out[row] = (unsigned char)st.unreach;
            if (write_passes) passes_out[row] = st.passes;
            if (row_checks) bad |= cr_check_eps(st.eps) | (st.unreach ? CR_ERR_UNREACH : 0);
            /* (for clipresc_split_apply and the split backward; a row solved before holds
             * its final state already, and only after cr_solve's barriers may one thread
             * rewrite what all have read) */
            if (solved_here) states[row] = st;
        }
        if (bad) CR_ATOMIC_OR(err, bad);
    }
}

CR_KERNEL clipresc_split_apply(CR_COMMON_PARAMS, const CR_GLOBAL cr_state* states, cr_i64 G,
                               cr_i64 seg, CR_GLOBAL real* y CR_TRAFFIC_PARAM) {
    for (cr_i64 w = CR_BID; w < B * G; w += CR_NBLOCKS) {
        cr_i64 row = w / G, i0 = (w % G) * seg;
        cr_i64 i1 = n - i0 < seg ? n : i0 + seg;
        cr_row r = CR_MAKE_ROW(row);
        acc eta = states[row].eta;
        CR_TRAFFIC(8 + (i1 - i0) * CR_EL_BYTES(r), (i1 - i0) * sizeof(real));
        cr_apply_range(r, y + row * n, i0, i1, eta);
    }
}

/* The backward of split rows, in three launches:
 *   clipresc_split_vjp_sums    a block per segment: the sums pass of cr_vjp_pass;
 *   clipresc_split_vjp_coeffs  a block per row: merges them in segment order, the row's
 *                              coefficients (rowinfo, B x CR_ROWINFO doubles) and epsbar;
 *   clipresc_split_vjp_apply   a block per segment: the cotangents of its elements.
 * The row's eta comes either from the forward (eta_in, finite p: the sums pass recovers
 * the breakpoint index, as cr_vjp_pass's find_k) or, with has_states, from the split
 * solve's final states (eta in double, k and the unreachable flag as the solve left
 * them: what the one-block clipresc_vjp uses when it solves; p = inf always takes this
 * way, its solve being one or two arg-max passes). Bounds shared along the batch then
 * take clipresc_bound_grad_shared as usual. */

/* The state the backward of one row starts from (see above). */
CR_DEVICE cr_state cr_vjp_state(const CR_GLOBAL cr_state* states, int has_states,
                                const CR_GLOBAL real* eta_in, cr_i64 row, acc eps, acc p,
                                int pm) {
    if (has_states) return states[row];
    return cr_given(eps, p, pm, CR_ACC(eta_in[row]));
}

CR_KERNEL clipresc_split_vjp_sums(CR_COMMON_PARAMS, const CR_GLOBAL real* ybar, int has_ybar,
                                  const CR_GLOBAL real* eta_in,
                                  const CR_GLOBAL cr_state* states, int has_states,
                                  CR_GLOBAL cr_part* parts, cr_i64 G, cr_i64 seg,
                                  CR_GLOBAL int* err, int check CR_TRAFFIC_PARAM) {
    CR_DECLARE_REDUCE_BUFS;
    for (cr_i64 w = CR_BID; w < B * G; w += CR_NBLOCKS) {
        cr_i64 row = w / G, i0 = (w % G) * seg;
        cr_i64 i1 = n - i0 < seg ? n : i0 + seg;
        cr_row r = CR_MAKE_ROW(row);
        acc eps = eps_arr ? eps_p[row * eps_es] : eps_v;
        cr_state st = cr_vjp_state(states, has_states, eta_in, row, eps, p, pm);
        const CR_GLOBAL real* ybar_row = ybar + (has_ybar ? row * n : 0);
        int bad = 0, find_k = !has_states;
        cr_part q = cr_part_zero();
        CR_ROUNDS(r, i0, i1, 0, i, e, {
            if (check) bad |= cr_check_el(e);
            cr_vjp_el(&q, &st, e, has_ybar ? CR_ACC(ybar_row[i]) : 0.0, has_ybar, find_k, i);
        })
        q = cr_reduce(CR_BUFS, q);
        CR_TRAFFIC((i1 - i0) * (CR_EL_BYTES(r) + (has_ybar ? sizeof(real) : 0)) +
                       (has_states ? (cr_i64)sizeof(cr_state) : (cr_i64)sizeof(real)) +
                       (eps_arr ? 8 : 0),
                   CR_PART_BYTES);
        if (CR_TID == 0) parts[w] = q;
        if (bad) CR_ATOMIC_OR(err, bad);
    }
}

CR_KERNEL clipresc_split_vjp_coeffs(CR_COMMON_PARAMS, const CR_GLOBAL real* etabar_p,
                                    int has_etabar, const CR_GLOBAL real* eta_in,
                                    const CR_GLOBAL cr_state* states, int has_states,
                                    const CR_GLOBAL cr_part* parts, cr_i64 G,
                                    CR_GLOBAL acc* rowinfo, CR_GLOBAL real* epsbar,
                                    CR_GLOBAL int* err, int check CR_TRAFFIC_PARAM) {
    CR_DECLARE_REDUCE_BUFS;
    for (cr_i64 row = CR_BID; row < B; row += CR_NBLOCKS) {
        cr_row r = CR_MAKE_ROW(row);
        acc eps = eps_arr ? eps_p[row * eps_es] : eps_v;
        cr_state st = cr_vjp_state(states, has_states, eta_in, row, eps, p, pm);
        cr_part q = cr_part_zero();
        for (cr_i64 sg = CR_TID; sg < G; sg += CR_NB) q = cr_part_add(q, parts[row * G + sg]);
        q = cr_reduce(CR_BUFS, q);
        cr_vjp_sums(&st, q, !has_states);
        acc eb = st.ybar_d + (has_etabar ? CR_ACC(etabar_p[row]) : 0.0);
        acc ak = st.k >= 0 ? fabs(CR_ACC(r.d[st.k])) : 1.0;
        acc eps_bar;
        cr_info f = cr_coeffs(&st, eb, ak, &eps_bar);
        CR_TRAFFIC(G * CR_PART_BYTES + sizeof(real) * (1 + (has_etabar ? 1 : 0)) +
                       (has_states ? (cr_i64)sizeof(cr_state) : (cr_i64)sizeof(real)) +
                       (eps_arr ? 8 : 0),
                   8 * CR_ROWINFO + sizeof(real));
        if (CR_TID == 0) {
            epsbar[row] = CR_REAL(eps_bar);
            CR_GLOBAL acc* ri = rowinfo + row * CR_ROWINFO;
            ri[0] = f.eta;
            ri[1] = f.G;
            ri[2] = f.H;
            ri[3] = f.kc;
            ri[4] = (acc)f.mode;
            ri[5] = (acc)f.k;
            if (check && cr_check_eps(eps)) CR_ATOMIC_OR(err, cr_check_eps(eps));
        }
    }
}

CR_KERNEL clipresc_split_vjp_apply(CR_COMMON_PARAMS, const CR_GLOBAL real* ybar, int has_ybar,
                                   const CR_GLOBAL acc* rowinfo, cr_i64 G, cr_i64 seg,
                                   CR_GLOBAL real* xbar, CR_GLOBAL real* dbar,
                                   CR_GLOBAL real* lbar, int lbar_full, CR_GLOBAL real* ubar,
                                   int ubar_full CR_TRAFFIC_PARAM) {
    for (cr_i64 w = CR_BID; w < B * G; w += CR_NBLOCKS) {
        cr_i64 row = w / G, i0 = (w % G) * seg;
        cr_i64 i1 = n - i0 < seg ? n : i0 + seg;
        cr_row r = CR_MAKE_ROW(row);
        cr_info f = cr_info_of(rowinfo + row * CR_ROWINFO);
        const CR_GLOBAL real* ybar_row = ybar + (has_ybar ? row * n : 0);
        CR_TRAFFIC(8 * CR_ROWINFO + (i1 - i0) * (CR_EL_BYTES(r) + (has_ybar ? sizeof(real) : 0)),
                   (i1 - i0) * (2 + lbar_full + ubar_full) * sizeof(real));
        cr_grad_range(r, ybar_row, has_ybar, f, p, pm, i0, i1, row * n, xbar, dbar, lbar,
                      lbar_full, ubar, ubar_full);
    }
}
