/* Interface between emulated kernel modules (compiled with pygpuemu_prelude.h)
 * and the emulator runtime library (pygpuemu_runtime.cpp).  Everything here is
 * prefixed so that it cannot collide with names used by kernel sources. */
#ifndef PYGPUEMU_ABI_H
#define PYGPUEMU_ABI_H

#pragma GCC visibility push(default)
#ifdef __cplusplus
extern "C" {
#endif

typedef struct pygpuemu_dim3 { unsigned x, y, z; } pygpuemu_dim3;

/* Public prefix of the runtime's per-thread (fiber) record. */
typedef struct pygpuemu_thread { pygpuemu_dim3 tid; } pygpuemu_thread;

/* The fiber that is running now; block-wide built-ins. */
extern pygpuemu_thread* pygpuemu_cur;
extern pygpuemu_dim3 pygpuemu_blockIdx, pygpuemu_blockDim, pygpuemu_gridDim;

enum {
    PYGPUEMU_BAR_SYNC = 0, PYGPUEMU_BAR_COUNT = 1, PYGPUEMU_BAR_AND = 2, PYGPUEMU_BAR_OR = 3
};

enum {
    PYGPUEMU_W_IDX = 1, PYGPUEMU_W_UP, PYGPUEMU_W_DOWN, PYGPUEMU_W_XOR,
    PYGPUEMU_W_BALLOT, PYGPUEMU_W_ANY, PYGPUEMU_W_ALL, PYGPUEMU_W_SYNC,
    PYGPUEMU_W_RED_ADD, PYGPUEMU_W_RED_MIN, PYGPUEMU_W_RED_MAX,
    PYGPUEMU_W_RED_UMIN, PYGPUEMU_W_RED_UMAX,
    PYGPUEMU_W_RED_AND, PYGPUEMU_W_RED_OR, PYGPUEMU_W_RED_XOR,
    PYGPUEMU_W_MATCH_ANY, PYGPUEMU_W_MATCH_ALL,
    PYGPUEMU_W_NUM_OPS
};

/* Block barrier: every thread of the block must arrive.  Returns the count /
 * and / or of the predicates for the _count/_and/_or variants. */
int pygpuemu_syncthreads(int kind, int pred);
/* Warp collective: all lanes of `mask` must arrive with the same op and mask. */
unsigned long long pygpuemu_warp(int op, unsigned mask, unsigned long long value,
                                 int arg, int width);
unsigned pygpuemu_activemask(void);
/* Base of the dynamic (extern __shared__) shared memory window. */
void* pygpuemu_dyn_smem(void);
/* Stops the launch with a KernelError (assert, __trap). */
void pygpuemu_trap(const char* what, const char* file, int line) __attribute__((noreturn));
/* Lets the other threads of the block run (__nanosleep). */
void pygpuemu_yield(void);
long long pygpuemu_clock64(void);

#ifdef __cplusplus
}
#endif
#pragma GCC visibility pop

#endif
