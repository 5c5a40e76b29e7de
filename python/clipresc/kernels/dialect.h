/*
 * clipresc portable kernel dialect: one kernel source, two compilers.
 *
 * The same kernel file (clipresc.cu) builds
 *   - as CUDA C++ with NVRTC (the default), and
 *   - as OpenCL C when CLIPRESC_OPENCL is defined (needs cl_khr_fp64).
 *
 * Kernels written against this header may only use what both dialects express:
 * one work-group per vector, shared-memory tree reductions with block barriers in
 * uniform control flow, no warp-synchronous tricks (shuffles, votes). Atomics are integer
 * only and order-independent, so results stay deterministic: CR_ATOMIC_OR on the 32-bit
 * error word, CR_ATOMIC_ADD reserving slots of a global buffer whose contents are sorted
 * before use, and 64-bit add / max on block-shared integers (CR_LADD64, CR_LMAX64:
 * the breakpoint histogram; OpenCL needs cl_khr_int64_base_atomics and
 * cl_khr_int64_extended_atomics).
 *
 * Element type: `real` (REAL, float by default; -DREAL=double for float64 data).
 * Accumulator type: `acc` (always double); convert with CR_ACC(v) / CR_REAL(v).
 * Kernels are declared `CR_KERNEL name(args)` (the macro supplies the `void`).
 */
#ifndef CLIPRESC_DIALECT_H
#define CLIPRESC_DIALECT_H

#ifndef REAL
#define REAL float
#endif

/* Threads per block (work-items per work-group); a power of two. The host must launch
 * with exactly this many threads per block. */
#ifndef CLIPRESC_BLOCK
#define CLIPRESC_BLOCK 256
#endif

#ifdef CLIPRESC_OPENCL
/* ------------------------------------------------------------------ OpenCL C */
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define CR_KERNEL __kernel __attribute__((reqd_work_group_size(CLIPRESC_BLOCK, 1, 1))) void
#define CR_GLOBAL __global         /* pointer into device (global) memory */
#define CR_ALIGN16 __attribute__((aligned(16))) /* (a struct loaded as one 16-byte vector) */
#define CR_SHARED __local          /* declaration of a block-shared array (kernel scope) */
#define CR_LOCAL_PTR __local       /* pointer parameter into block-shared memory */
#define CR_DEVICE static inline    /* device helper function */
#define CR_COLD static             /* helper run once per step, kept out of line on CUDA */
typedef long cr_i64;
#define CR_TID ((cr_i64)get_local_id(0))
#define CR_BID ((cr_i64)get_group_id(0))
#define CR_BDIM ((cr_i64)get_local_size(0))
#define CR_NBLOCKS ((cr_i64)get_num_groups(0))
/* (both fences, like CUDA's __syncthreads: the split kernels' per-row state in global
 * memory is read by every thread and rewritten by one after the block's barriers) */
#define CR_BARRIER() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)
#define CR_D2L(v) as_long(v)       /* bit pattern of a double */
#define CR_L2D(v) as_double(v)
#define CR_INF ((double)INFINITY)
#define CR_ATOMIC_OR(ptr, v) atomic_or((volatile __global int*)(ptr), (v))
#define CR_ATOMIC_ADD(ptr, v) atomic_add((volatile __global int*)(ptr), (v))
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL EXTENSION cl_khr_int64_extended_atomics : enable
#define CR_LADD64(ptr, v) atom_add((volatile __local long*)(ptr), (long)(v))
#define CR_LMAX64(ptr, v) atom_max((volatile __local long*)(ptr), (long)(v))
#define CR_I64_MAX ((cr_i64)0x7fffffffffffffffL)
#else
/* ------------------------------------------------------------------ CUDA (NVRTC) */
/* Blocks per SM the CUDA build is compiled for: __launch_bounds__(256, 4) caps the
 * kernels at 64 registers per thread (65536 / (256 * 4)), i.e. 1024 resident threads per
 * SM. The solve's per-row state (about 20 doubles kept across passes) needs ~90-100
 * registers uncapped; capped, ptxas spills a few hundred bytes of it to local memory
 * (L1-resident). -DCLIPRESC_MIN_BLOCKS=1 builds the uncapped variant for comparison. */
#ifndef CLIPRESC_MIN_BLOCKS
#define CLIPRESC_MIN_BLOCKS 4
#endif
#define CR_KERNEL extern "C" __global__ void __launch_bounds__(CLIPRESC_BLOCK, CLIPRESC_MIN_BLOCKS)
#define CR_GLOBAL
#define CR_ALIGN16 __align__(16)
#define CR_SHARED __shared__
#define CR_LOCAL_PTR
#define CR_DEVICE static __device__ __forceinline__
/* Once-per-step helpers (the solve's state updates, histogram scan, sort) kept out of line:
 * inlined, their temporaries would compete with the passes' for the 64 registers. */
#define CR_COLD static __device__ __noinline__
typedef long long cr_i64;
#define CR_TID ((cr_i64)threadIdx.x)
#define CR_BID ((cr_i64)blockIdx.x)
#define CR_BDIM ((cr_i64)blockDim.x)
#define CR_NBLOCKS ((cr_i64)gridDim.x)
#define CR_BARRIER() __syncthreads()
#define CR_D2L(v) __double_as_longlong(v)
#define CR_L2D(v) __longlong_as_double(v)
#define CR_INF __longlong_as_double(0x7ff0000000000000LL)
#define CR_ATOMIC_OR(ptr, v) atomicOr((ptr), (v))
#define CR_ATOMIC_ADD(ptr, v) atomicAdd((ptr), (v))
#define CR_LADD64(ptr, v) \
    ((cr_i64)atomicAdd((unsigned long long*)(ptr), (unsigned long long)(v)))
#define CR_LMAX64(ptr, v) atomicMax((long long*)(ptr), (long long)(v))
#define CR_I64_MAX ((cr_i64)0x7fffffffffffffffLL)
#endif

typedef REAL real;
typedef double acc;

/* Traffic-counting build (OpenCL only, -DCLIPRESC_COUNT_TRAFFIC): every kernel takes one
 * more argument, a (2 x blocks) long array; thread 0 of each block adds the global-memory
 * bytes its row loops read and write (each loop iteration's loads counted at their size,
 * cache hits included) to its block's pair, so no atomics are needed. Elsewhere the
 * macros vanish. */
#ifdef CLIPRESC_COUNT_TRAFFIC
#ifndef CLIPRESC_OPENCL
#error "CLIPRESC_COUNT_TRAFFIC is for the OpenCL build"
#endif
#define CR_TRAFFIC_PARAM , __global long* cr_traffic
#define CR_TRAFFIC(rd, wr)                              \
    do {                                                \
        if (CR_TID == 0) {                              \
            cr_traffic[2 * CR_BID] += (long)(rd);       \
            cr_traffic[2 * CR_BID + 1] += (long)(wr);   \
        }                                               \
    } while (0)
#else
#define CR_TRAFFIC_PARAM
#define CR_TRAFFIC(rd, wr) ((void)0)
#endif

/* Conversions between the element type and the accumulator. CuPy compiles with
 * -ftz=true, under which NVRTC flushes subnormal floats in float<->double conversions;
 * inline PTX keeps them exact (double data converts as is). */
#ifdef CLIPRESC_OPENCL
#define CR_ACC(v) ((acc)(v))
#define CR_REAL(v) ((real)(v))
#else
template <typename T>
struct cr_acc_cvt {
    static __device__ __forceinline__ double of(T v) { return (double)v; }
};
template <>
struct cr_acc_cvt<float> {
    static __device__ __forceinline__ double of(float v) {
        double r;
        asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(v));
        return r;
    }
};
template <typename T>
struct cr_real_cvt {
    static __device__ __forceinline__ T of(double v) { return (T)v; }
};
template <>
struct cr_real_cvt<float> {
    static __device__ __forceinline__ float of(double v) {
        float r;
        asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(v));
        return r;
    }
};
#define CR_ACC(v) cr_acc_cvt<real>::of(v)
#define CR_REAL(v) cr_real_cvt<real>::of(v)
#endif

#endif /* CLIPRESC_DIALECT_H */
