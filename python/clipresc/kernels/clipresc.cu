/*
 * clipresc GPU kernels: clipping-aware rescaling on 2-D (B, n) row-major data.
 *
 * One block (work-group) of CLIPRESC_BLOCK threads handles one row (vector) at a time;
 * blocks loop over rows (grid-stride), threads loop over the row (block-stride). All
 * reductions are shared-memory trees over fixed per-thread partials, so results are
 * bitwise reproducible for a given block size. Everything is accumulated in double.
 *
 * The source is written in the portable dialect of dialect.h and builds both as CUDA
 * (NVRTC) and as OpenCL C (-DCLIPRESC_OPENCL). Element type: -DREAL=float|double.
 *
 * Per element (see DESIGN.md section 1): a = |d|, room s = u - x (d > 0) or x - l (d < 0),
 * movable iff d != 0. Element i is saturated at eta iff s_i <= eta * a_i (ties saturate;
 * infinite room never saturates). With t = eta^p the p-th power of the achieved size is
 * g(t) = C + M t (C = sum of s^p over saturated, M = sum of a^p over unsaturated).
 *
 * Solve (finite p): Newton / variable fixing from eta = 0 (each pass one block reduction
 * of C, M and the saturated count), stopping when the saturated set stops growing. After
 * CR_NEWTON_PASSES passes it switches to bisection on the bit pattern of eta between a
 * lower bracket (g <= T) and an upper bracket (g > T), stopping as soon as the brackets
 * hold the same saturated set (then no breakpoint lies between them and the root of the
 * lower bracket's linear piece is exact). The bit patterns of non-negative doubles are
 * ordered like the values, so at most 64 bisection passes are ever needed: the pass
 * count is bounded whatever the input.
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

CR_DEVICE cr_el cr_load(cr_row r, cr_i64 i) {
    cr_el e;
    e.x = CR_ACC(r.x[i]);
    e.d = CR_ACC(r.d[i]);
    e.lo = r.lo_arr ? CR_ACC(r.lo[i * r.lo_es]) : r.lo_v;
    e.hi = r.hi_arr ? CR_ACC(r.hi[i * r.hi_es]) : r.hi_v;
    e.a = fabs(e.d);
    e.mv = e.d != 0.0;
    acc s = e.d > 0.0 ? e.hi - e.x : e.x - e.lo;
    e.s = s > 0.0 ? s : 0.0;
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
    acc s0, s1, s2;
    cr_i64 n0, n1;
    acc k1, k2;
    cr_i64 ki;
} cr_part;

CR_DEVICE cr_part cr_part_zero(void) {
    cr_part q;
    q.s0 = 0.0;
    q.s1 = 0.0;
    q.s2 = 0.0;
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

CR_DEVICE void cr_part_argmax(cr_part* q, acc k1, acc k2, cr_i64 i) {
    if (cr_better(k1, k2, i, q->k1, q->k2, q->ki)) {
        q->k1 = k1;
        q->k2 = k2;
        q->ki = i;
    }
}

#define CR_BUF_PARAMS                                                        \
    CR_LOCAL_PTR acc *sh_s0, CR_LOCAL_PTR acc *sh_s1, CR_LOCAL_PTR acc *sh_s2,   \
        CR_LOCAL_PTR acc *sh_k1,                                                  \
        CR_LOCAL_PTR acc *sh_k2, CR_LOCAL_PTR cr_i64 *sh_n0, CR_LOCAL_PTR cr_i64 *sh_n1, \
        CR_LOCAL_PTR cr_i64 *sh_ki
#define CR_BUFS sh_s0, sh_s1, sh_s2, sh_k1, sh_k2, sh_n0, sh_n1, sh_ki
#define CR_DECLARE_BUFS              \
    CR_SHARED acc sh_s0[CR_NB];      \
    CR_SHARED acc sh_s1[CR_NB];      \
    CR_SHARED acc sh_s2[CR_NB];      \
    CR_SHARED acc sh_k1[CR_NB];      \
    CR_SHARED acc sh_k2[CR_NB];      \
    CR_SHARED cr_i64 sh_n0[CR_NB];   \
    CR_SHARED cr_i64 sh_n1[CR_NB];   \
    CR_SHARED cr_i64 sh_ki[CR_NB]

/* Block-wide reduction of the partials (fixed tree: deterministic); every thread gets
 * the result. This is the only barrier site of the per-row kernels, which keeps the
 * OpenCL (PoCL) work-group compilation cheap. */
CR_DEVICE cr_part cr_reduce(CR_BUF_PARAMS, cr_part q) {
    int t = (int)CR_TID;
    sh_s0[t] = q.s0;
    sh_s1[t] = q.s1;
    sh_s2[t] = q.s2;
    sh_n0[t] = q.n0;
    sh_n1[t] = q.n1;
    sh_k1[t] = q.k1;
    sh_k2[t] = q.k2;
    sh_ki[t] = q.ki;
    CR_BARRIER();
#pragma unroll 1
    for (int h = CR_NB / 2; h > 0; h >>= 1) {
        if (t < h) {
            sh_s0[t] += sh_s0[t + h];
            sh_s1[t] += sh_s1[t + h];
            sh_s2[t] += sh_s2[t + h];
            sh_n0[t] += sh_n0[t + h];
            sh_n1[t] += sh_n1[t + h];
            if (cr_better(sh_k1[t + h], sh_k2[t + h], sh_ki[t + h], sh_k1[t], sh_k2[t], sh_ki[t])) {
                sh_k1[t] = sh_k1[t + h];
                sh_k2[t] = sh_k2[t + h];
                sh_ki[t] = sh_ki[t + h];
            }
        }
        CR_BARRIER();
    }
    cr_part r;
    r.s0 = sh_s0[0];
    r.s1 = sh_s1[0];
    r.s2 = sh_s2[0];
    r.n0 = sh_n0[0];
    r.n1 = sh_n1[0];
    r.k1 = sh_k1[0];
    r.k2 = sh_k2[0];
    r.ki = sh_ki[0];
    CR_BARRIER();
    return r;
}

/* ----------------------------------------------------------------- solve */

/* The per-row solver is a small state machine: each step is one pass over the row
 * (cr_accumulate), one block reduction (cr_reduce) and a uniform update (cr_step), so
 * the kernels contain a single reduction site. */
#define CR_PH_TOTALS 0 /* finite p: totals, state at eta = 0, largest breakpoint */
#define CR_PH_EVAL 1   /* finite p: C, M and saturated count at eta = m */
#define CR_PH_INF1 2   /* p = inf: max a over s >= eps */
#define CR_PH_INF2 3   /* p = inf, unreachable: max (s, a) */
#define CR_PH_DONE 4

typedef struct {
    acc eps, T, p;
    int pm, phase;
    /* result */
    acc eta;
    int unreach;
    cr_i64 k; /* finite p: arg-max of s/a; inf: the element that sets eta; -1: none */
    int passes;
    /* brackets of the finite-p solve: g(lo) <= T < g(hi) */
    acc lo, lo_C, lo_M, hi, m;
    cr_i64 lo_cnt, hi_cnt;
    int it, newton;
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
    st.msol = 0.0;
    st.ybar_d = 0.0;
    return st;
}

/* Adds element i to the partials of the current phase. */
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

/* Uniform update from the reduced partials of one pass. */
CR_DEVICE void cr_step(cr_state* st, cr_part q) {
    st->passes += 1;
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
                cr_next(st);
            }
            break;
        }
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

/* Runs the solve for one row. Every thread of the block must call it; all of them
 * return the same state. With check, the first pass (which reads every element) also
 * ORs each element's error bits into *bad. */
CR_DEVICE cr_state cr_run_row(cr_row r, acc eps, acc p, int pm, int check, int* bad,
                              CR_BUF_PARAMS) {
    cr_state st = cr_start(eps, p, pm);
    while (st.phase != CR_PH_DONE) {
        cr_part q = cr_part_zero();
        int first = check && st.passes == 0;
        for (cr_i64 i = CR_TID; i < r.n; i += CR_NB) {
            cr_el e = cr_load(r, i);
            if (first) *bad |= cr_check_el(e);
            cr_accumulate(&q, &st, e, i);
        }
        q = cr_reduce(CR_BUFS, q);
        cr_step(&st, q);
    }
    return st;
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
CR_DEVICE void cr_vjp_pass(cr_row r, cr_state* st, const CR_GLOBAL real* ybar_row, int has_ybar,
                           int find_k, int check, int* bad, CR_BUF_PARAMS) {
    cr_part q = cr_part_zero();
    int inf = st->pm == CR_PM_INF;
    for (cr_i64 i = CR_TID; i < r.n; i += CR_NB) {
        cr_el e = cr_load(r, i);
        if (check) *bad |= cr_check_el(e);
        if (!e.mv) continue;
        if (find_k) {
            q.n1 += 1;
            q.s2 += cr_pow(e.s, st->p, st->pm);
            cr_part_argmax(&q, cr_key(e), 0.0, i);
        }
        if (!(e.s <= st->eta * e.a)) {
            if (!inf) q.s0 += cr_pow(e.a, st->p, st->pm);
            if (has_ybar) q.s1 += CR_ACC(ybar_row[i]) * e.d;
        }
    }
    q = cr_reduce(CR_BUFS, q);
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
/* ----------------------------------------------------------------- gradients */

typedef struct {
    acc eta, G, H, kc;
    int mode;
    cr_i64 k;
} cr_info;

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

/* ----------------------------------------------------------------- kernels */

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
        cr_state s = cr_run_row(r, eps, p, pm, check, &bad, CR_BUFS);
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
        if (write_y) {
            for (cr_i64 i = CR_TID; i < n; i += CR_NB) {
                cr_el e = cr_load(r, i);
                acc v;
                if (e.mv && e.s <= s.eta * e.a) {
                    v = e.d > 0.0 ? e.hi : e.lo;
                } else {
                    v = fmin(fmax(e.x + s.eta * e.d, e.lo), e.hi);
                }
                y[row * n + i] = CR_REAL(v);
            }
        }
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
            s = cr_run_row(r, eps, p, pm, check, &bad, CR_BUFS);
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

        for (cr_i64 i = CR_TID; i < n; i += CR_NB) {
            cr_el e = cr_load(r, i);
            acc yb = has_ybar ? CR_ACC(ybar_row[i]) : 0.0;
            acc gx, gd, gl, gu;
            cr_elem_grad(e, yb, f, i == f.k, p, pm, &gx, &gd, &gl, &gu);
            xbar[row * n + i] = CR_REAL(gx);
            dbar[row * n + i] = CR_REAL(gd);
            if (lbar_full) lbar[row * n + i] = CR_REAL(gl);
            if (ubar_full) ubar[row * n + i] = CR_REAL(gu);
        }
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
            const CR_GLOBAL acc* ri = rowinfo + row * CR_ROWINFO;
            cr_info f;
            f.eta = ri[0];
            f.G = ri[1];
            f.H = ri[2];
            f.kc = ri[3];
            f.mode = (int)ri[4];
            f.k = (cr_i64)ri[5];
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
