// Runtime of the pygpu_ops CUDA emulator.
//
// One launch runs the blocks of the grid one after another on the calling OS
// thread.  Inside a block every CUDA thread is a fiber with its own stack; a
// fiber runs until it blocks (barrier, warp collective, __nanosleep) or
// finishes, then the scheduler picks the next runnable fiber at random (seeded).
//
// The runtime also owns "device" memory: every buffer is an mmap'd region with
// PROT_NONE guard pages around the data and canary bytes in the slack, so
// that out-of-bounds accesses fault (and are reported) instead of silently
// reading neighbouring data.
//
// Built once as a shared library, loaded with RTLD_GLOBAL; emulated modules
// resolve the pygpuemu_* symbols against it.

#include "pygpuemu_abi.h"

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
// Fibers switch with hand-written assembly on x86-64 and with ucontext
// elsewhere (or when PYGPUEMU_USE_UCONTEXT is defined, to test that path).
#if defined(__x86_64__) && !defined(PYGPUEMU_USE_UCONTEXT)
#define PYGPUEMU_ASM_SWITCH 1
#else
#define PYGPUEMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#define EXPORT extern "C" __attribute__((visibility("default")))

// ---------------------------------------------------------------------------
// Exported state read by kernel code through the prelude's macros.
// (declared extern "C" with default visibility in pygpuemu_abi.h)
pygpuemu_thread* pygpuemu_cur = nullptr;
pygpuemu_dim3 pygpuemu_blockIdx = {0, 0, 0};
pygpuemu_dim3 pygpuemu_blockDim = {1, 1, 1};
pygpuemu_dim3 pygpuemu_gridDim = {1, 1, 1};

namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackSize = 128 * 1024;
constexpr size_t kDynSmemMax = 227 * 1024;
constexpr unsigned char kPoison = 0xFF;
constexpr unsigned char kCanary = 0xA5;

size_t page_size() {
    static size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}
size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

enum Err {
    E_OK = 0, E_DEADLOCK = 1, E_OOB = 2, E_FAULT = 3, E_LAUNCH = 4, E_INTERNAL = 5, E_TIMEOUT = 6
};
enum State { ST_RUNNABLE, ST_BARRIER, ST_WARP, ST_EXITED, ST_SLEEP };

// ---------------------------------------------------------------------------
// Context switch.
#if PYGPUEMU_ASM_SWITCH
// pygpuemu_swap(void** save_sp, void* load_sp): pushes the callee-saved
// registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer to *save_sp, then restores the same from load_sp.
asm(R"(
    .text
    .p2align 4
    .globl pygpuemu_swap_ctx
    .hidden pygpuemu_swap_ctx
    .type pygpuemu_swap_ctx,@function
pygpuemu_swap_ctx:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size pygpuemu_swap_ctx,.-pygpuemu_swap_ctx

    .p2align 4
    .globl pygpuemu_fiber_entry
    .hidden pygpuemu_fiber_entry
    .type pygpuemu_fiber_entry,@function
pygpuemu_fiber_entry:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size pygpuemu_fiber_entry,.-pygpuemu_fiber_entry
)");
extern "C" void pygpuemu_swap_ctx(void** save_sp, void* load_sp);
extern "C" void pygpuemu_fiber_entry();
#endif

struct Fiber : pygpuemu_thread {
#if PYGPUEMU_ASM_SWITCH
    void* sp;
#else
    ucontext_t uc;
#endif
    int linear, lane, warp;
    int state;
    int wop;
    unsigned wmask;
    int warg, wwidth;
    unsigned long long wval, wres;
};

struct Warp {
    unsigned exists;   // lanes that exist (partial last warp)
    unsigned waiting;  // lanes blocked in a warp collective
    Fiber* lane[32];
};

const char* op_name(int op) {
    switch (op) {
        case PYGPUEMU_W_IDX: return "__shfl_sync";
        case PYGPUEMU_W_UP: return "__shfl_up_sync";
        case PYGPUEMU_W_DOWN: return "__shfl_down_sync";
        case PYGPUEMU_W_XOR: return "__shfl_xor_sync";
        case PYGPUEMU_W_BALLOT: return "__ballot_sync";
        case PYGPUEMU_W_ANY: return "__any_sync";
        case PYGPUEMU_W_ALL: return "__all_sync";
        case PYGPUEMU_W_SYNC: return "__syncwarp";
        case PYGPUEMU_W_RED_ADD: return "__reduce_add_sync";
        case PYGPUEMU_W_RED_MIN: case PYGPUEMU_W_RED_UMIN: return "__reduce_min_sync";
        case PYGPUEMU_W_RED_MAX: case PYGPUEMU_W_RED_UMAX: return "__reduce_max_sync";
        case PYGPUEMU_W_RED_AND: return "__reduce_and_sync";
        case PYGPUEMU_W_RED_OR: return "__reduce_or_sync";
        case PYGPUEMU_W_RED_XOR: return "__reduce_xor_sync";
        case PYGPUEMU_W_MATCH_ANY: return "__match_any_sync";
        case PYGPUEMU_W_MATCH_ALL: return "__match_all_sync";
    }
    return "warp collective";
}

// ---------------------------------------------------------------------------
// Launch / block state (launches are serialized by the Python side).
Fiber* g_fibers = nullptr;
Warp g_warps[kMaxThreads / 32];
Fiber* g_runq[kMaxThreads];
int g_nrun = 0, g_nthreads = 0, g_nexited = 0;
int g_bar_arrived = 0, g_bar_true = 0, g_bar_last_true = 0;
const char* g_bar_name = "__syncthreads";
uint64_t g_rng = 0;
int g_err = E_OK;
std::string g_msg;
const char* g_kernel = "?";
void (*g_tramp)(void**) = nullptr;
void** g_args = nullptr;
char* g_stacks = nullptr;
size_t g_stack_stride = 0;
[[maybe_unused]] uint32_t g_fpctl[2];  // MXCSR, x87 control word of new fibers
long long g_clock = 0;
#if PYGPUEMU_ASM_SWITCH
void* g_sched_sp = nullptr;
#else
ucontext_t g_sched_uc;
#endif

inline uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string where_block() {
    return fmt("kernel '%s', block (%u,%u,%u)", g_kernel, pygpuemu_blockIdx.x,
               pygpuemu_blockIdx.y, pygpuemu_blockIdx.z);
}
std::string thread_str(const Fiber* f) {
    return fmt("thread (%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
}
std::string where(const Fiber* f) { return where_block() + ", " + thread_str(f); }

inline void switch_to_scheduler(Fiber* f) {
#if PYGPUEMU_ASM_SWITCH
    pygpuemu_swap_ctx(&f->sp, g_sched_sp);
#else
    swapcontext(&f->uc, &g_sched_uc);
#endif
}

inline Fiber* pick_runnable() {
    uint32_t k = (uint32_t)(((splitmix(g_rng) >> 32) * (uint64_t)g_nrun) >> 32);
    Fiber* f = g_runq[k];
    g_runq[k] = g_runq[--g_nrun];
    return f;
}

// The running fiber `f` blocks (or is requeued): switch directly to the next
// runnable fiber, chosen at random; back to the scheduler when none is left.
inline void switch_away(Fiber* f) {
    if (!g_nrun) {
        switch_to_scheduler(f);
        return;
    }
    Fiber* g = pick_runnable();
    if (g == f) return;
    pygpuemu_cur = g;
#if PYGPUEMU_ASM_SWITCH
    pygpuemu_swap_ctx(&f->sp, g->sp);
#else
    swapcontext(&f->uc, &g->uc);
#endif
}

inline void switch_to_fiber(Fiber* f) {
#if PYGPUEMU_ASM_SWITCH
    pygpuemu_swap_ctx(&g_sched_sp, f->sp);
#else
    swapcontext(&g_sched_uc, &f->uc);
#endif
}

void block_timeout();

[[noreturn]] void fiber_fail(int kind, const std::string& what) {
    block_timeout();  // the launch ends here: no watchdog jump while g_msg is written
    Fiber* f = static_cast<Fiber*>(pygpuemu_cur);
    g_err = kind;
    if (!f) {
        g_msg = "kernel '" + std::string(g_kernel) + "': " + what;
        // Not on a fiber: nothing sensible to return to.
        fprintf(stderr, "pygpu_ops emulator: %s\n", g_msg.c_str());
        abort();
    }
    g_msg = where(f) + ": " + what;
    switch_to_scheduler(f);  // never resumed
    __builtin_unreachable();
}

void fiber_main(Fiber* f) {
    g_tramp(g_args);
    f->state = ST_EXITED;
    g_nexited++;
    switch_away(f);
    __builtin_unreachable();
}

#if !PYGPUEMU_ASM_SWITCH
void fiber_main_uc(unsigned hi, unsigned lo) {
    fiber_main(reinterpret_cast<Fiber*>(((uintptr_t)hi << 32) | lo));
}
#endif

void init_fiber(Fiber* f, int i) {
    char* lo = g_stacks + (size_t)i * g_stack_stride + page_size();
#if PYGPUEMU_ASM_SWITCH
    char* top = lo + kStackSize;
    void** s = reinterpret_cast<void**>((uintptr_t)top & ~(uintptr_t)15);
    s[-1] = reinterpret_cast<void*>(&pygpuemu_fiber_entry);
    s[-2] = nullptr;                                   // rbp
    s[-3] = nullptr;                                   // rbx
    s[-4] = f;                                         // r12
    s[-5] = reinterpret_cast<void*>(&fiber_main);      // r13
    s[-6] = nullptr;                                   // r14
    s[-7] = nullptr;                                   // r15
    memcpy(&s[-8], g_fpctl, 8);                        // mxcsr, x87 cw
    f->sp = &s[-8];
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = lo;
    f->uc.uc_stack.ss_size = kStackSize;
    f->uc.uc_link = nullptr;
    uintptr_t p = reinterpret_cast<uintptr_t>(f);
    makecontext(&f->uc, (void (*)())fiber_main_uc, 2, (unsigned)(p >> 32), (unsigned)p);
#endif
}

bool ensure_stacks(std::string& err) {
    if (g_stacks) return true;
    g_stack_stride = kStackSize + page_size();
    size_t total = g_stack_stride * kMaxThreads;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        err = fmt("mmap of fiber stacks failed: %s", strerror(errno));
        return false;
    }
    g_stacks = static_cast<char*>(m);
    for (int i = 0; i < kMaxThreads; i++)
        mprotect(g_stacks + (size_t)i * g_stack_stride, page_size(), PROT_NONE);
    g_fibers = new Fiber[kMaxThreads];
    return true;
}

inline void make_runnable(Fiber* f) {
    f->state = ST_RUNNABLE;
    g_runq[g_nrun++] = f;
}

// ---------------------------------------------------------------------------
// Deadlock diagnosis (nothing runnable, not every thread finished).
std::string state_desc(const Fiber* g) {
    switch (g->state) {
        case ST_EXITED: return "has exited";
        case ST_BARRIER: return std::string("waits at ") + g_bar_name;
        case ST_WARP:
            return fmt("waits in %s(mask=0x%08x)", op_name(g->wop), g->wmask);
        default: return "is runnable";
    }
}

void diagnose_deadlock() {
    block_timeout();  // the launch ends here: no watchdog jump while g_msg is written
    g_err = E_DEADLOCK;
    // 1) A warp collective that cannot complete.
    for (int i = 0; i < g_nthreads; i++) {
        Fiber* f = &g_fibers[i];
        if (f->state != ST_WARP) continue;
        Warp& w = g_warps[f->warp];
        unsigned eff = f->wmask & w.exists;
        for (int l = 0; l < 32; l++) {
            if (!(eff >> l & 1) || l == f->lane) continue;
            Fiber* g = w.lane[l];
            if (g->state == ST_WARP && g->wmask == f->wmask) continue;
            g_msg = where(f) + fmt(": deadlock: waits in %s(mask=0x%08x) (warp %d, lane %d), but "
                                   "lane %d (",
                                   op_name(f->wop), f->wmask, f->warp, f->lane, l) +
                    thread_str(g) + ") " + state_desc(g) +
                    ". Every lane named in the mask must reach the same warp collective with "
                    "the same mask (a collective in divergent code, or a lane that returned "
                    "early?)";
            return;
        }
    }
    // 2) A block barrier that cannot complete.
    Fiber* waiter = nullptr;
    Fiber* exited = nullptr;
    int nwait = 0;
    for (int i = 0; i < g_nthreads; i++) {
        Fiber* f = &g_fibers[i];
        if (f->state == ST_BARRIER) {
            nwait++;
            if (!waiter) waiter = f;
        } else if (f->state == ST_EXITED && !exited) {
            exited = f;
        }
    }
    if (waiter && exited) {
        g_msg = where(exited) + fmt(": deadlock: this thread exited (returned) while %d thread(s) "
                                    "wait at %s, e.g. ",
                                    nwait, g_bar_name) +
                thread_str(waiter) +
                ". Every thread of the block must reach each __syncthreads() (an early return "
                "before a barrier?)";
        return;
    }
    for (int i = 0; i < g_nthreads; i++) {
        Fiber* f = &g_fibers[i];
        if (f->state != ST_EXITED) {
            g_msg = where(f) + ": deadlock: thread " + state_desc(f) +
                    " and no thread of the block can make progress";
            return;
        }
    }
    g_msg = where_block() + ": deadlock (internal: no waiting thread found)";
}

// Memory counters (pygpuemu_counters.inc).
bool g_counting = false;
void count_block();

void run_block(unsigned bx, unsigned by, unsigned bz, uint64_t seed) {
    pygpuemu_blockIdx = {bx, by, bz};
    uint64_t lin = bx + (uint64_t)pygpuemu_gridDim.x * (by + (uint64_t)pygpuemu_gridDim.y * bz);
    g_rng = seed * 0x2545F4914F6CDD1Dull ^ (lin + 1) * 0x9E3779B97F4A7C15ull;
    splitmix(g_rng);
    const unsigned dx = pygpuemu_blockDim.x, dy = pygpuemu_blockDim.y;
    const int n = g_nthreads;
    for (int w = 0; w < (n + 31) / 32; w++) {
        int cnt = n - w * 32 < 32 ? n - w * 32 : 32;
        g_warps[w].exists = cnt == 32 ? 0xffffffffu : ((1u << cnt) - 1);
        g_warps[w].waiting = 0;
    }
    for (int i = 0; i < n; i++) {
        Fiber* f = &g_fibers[i];
        f->tid.x = i % dx;
        f->tid.y = (i / dx) % dy;
        f->tid.z = i / (dx * dy);
        f->linear = i;
        f->lane = i & 31;
        f->warp = i >> 5;
        f->state = ST_RUNNABLE;
        g_warps[f->warp].lane[f->lane] = f;
        init_fiber(f, i);
        g_runq[i] = f;
    }
    g_nrun = n;
    g_nexited = 0;
    g_bar_arrived = g_bar_true = 0;
    while (g_nrun) {
        Fiber* f = pick_runnable();
        pygpuemu_cur = f;
        switch_to_fiber(f);
        if (g_err) {
            pygpuemu_cur = nullptr;
            return;
        }
    }
    pygpuemu_cur = nullptr;
    if (g_nexited != n) diagnose_deadlock();
    if (g_counting && !g_err) count_block();
}

// ---------------------------------------------------------------------------
// Device buffers.
struct Buf {
    char* map;
    size_t maplen;
    char* data;
    size_t nbytes;
    std::string desc;
};
std::mutex g_buf_mu;
std::map<uintptr_t, Buf> g_bufs;  // keyed by map start
std::vector<Buf> g_freed;         // most recent frees, for messages
size_t g_freed_pos = 0;

const Buf* find_buf_locked(uintptr_t a, const std::map<uintptr_t, Buf>& m) {
    auto it = m.upper_bound(a);
    if (it == m.begin()) return nullptr;
    --it;
    const Buf& b = it->second;
    if (a >= (uintptr_t)b.map && a < (uintptr_t)b.map + b.maplen) return &b;
    return nullptr;
}

// Dynamic shared memory window: [guard][kDynSmemMax rounded to pages][guard].
std::once_flag g_dsm_once;
char* g_dsm = nullptr;
size_t g_dsm_cap = 0;
size_t g_dsm_rw = (size_t)-1;  // bytes currently mapped read/write

void dsm_init() {
    g_dsm_cap = round_up(kDynSmemMax, page_size());
    void* m = mmap(nullptr, g_dsm_cap + 2 * page_size(), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) abort();
    g_dsm = static_cast<char*>(m) + page_size();
    g_dsm_rw = 0;
}

// Static __shared__ variables are thread_local in the module: locate the
// module's TLS block for this OS thread from the address of its anchor.  The
// same walk finds the executable segments of the module (from the address of
// the kernel's trampoline) and of this runtime, for the watchdog (see
// on_timeout).
struct CodeRange {
    uintptr_t lo = 0, hi = 0;
    bool contains(uintptr_t pc) const { return pc >= lo && pc < hi; }
};
struct TlsQuery {
    uintptr_t anchor;
    char* begin;
    size_t size;
    uintptr_t code_addr[2];  // an address inside the module / the runtime
    CodeRange code[2];
};
int tls_cb(struct dl_phdr_info* info, size_t, void* data) {
    TlsQuery* q = static_cast<TlsQuery*>(data);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X)) {
            uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
            for (int k = 0; k < 2; k++)
                if (q->code_addr[k] >= lo && q->code_addr[k] < hi) q->code[k] = {lo, hi};
        }
        if (ph.p_type != PT_TLS || !info->dlpi_tls_data) continue;
        uintptr_t b = (uintptr_t)info->dlpi_tls_data;
        size_t sz = ph.p_memsz;
        if (q->anchor >= b && q->anchor < b + sz) {
            q->begin = static_cast<char*>(info->dlpi_tls_data);
            q->size = sz;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Fault handling.
const int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
constexpr int kNumSignals = sizeof(kSignals) / sizeof(kSignals[0]);
struct sigaction g_old_sa[kNumSignals];
stack_t g_old_ss;
char* g_altstack = nullptr;
constexpr size_t kAltStackSize = 256 * 1024;
// The jump buffer of the running launch.  Launches are serialized (by the
// Python side), but may come from any OS thread: the buffer is only used while
// g_in_launch is set, which happens after sigsetjmp has filled it in the
// launching thread (g_launch_thread) and is cleared before the launch returns.
sigjmp_buf g_jmp;
volatile sig_atomic_t g_in_launch = 0;
pthread_t g_launch_thread;
volatile int g_fault_sig = 0, g_fault_code = 0, g_fault_write = -1;
void* volatile g_fault_addr = nullptr;
Fiber* volatile g_fault_fiber = nullptr;
// A timeout found after the blocks ran to the end (the deadline check after the launch), as
// opposed to the watchdog interrupting the launch, in a thread or in the runtime between them.
volatile bool g_timeout_after_end = false;

// Watchdog: a one-shot POSIX timer that signals the launching thread
// (SIGEV_THREAD_ID).  The signal is blocked in that thread except while the
// kernel runs, and every timer carries a generation number, so that a signal
// that arrives before the jump buffer is set, after the launch ended, or from
// an earlier launch's timer, is dropped instead of jumping anywhere.
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
int timeout_signal() { return SIGRTMIN + 3; }
struct sigaction g_old_timeout_sa;
timer_t g_timer;
bool g_timer_armed = false;
bool g_timeout_handler = false;
double g_timeout_s = 0;
struct timespec g_deadline;  // CLOCK_MONOTONIC time at which the timer fires
volatile sig_atomic_t g_timer_gen = 0;
// Executable code of the running kernel's module and of this runtime.
CodeRange g_code_module, g_code_runtime;
constexpr long kRetryNs = 100000;  // 0.1 ms

sigset_t timeout_set() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, timeout_signal());
    return s;
}
void block_timeout() {
    sigset_t s = timeout_set();
    pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

void on_fault(int sig, siginfo_t* si, void* ucv) {
    if (!g_in_launch || !pthread_equal(pthread_self(), g_launch_thread)) {
        // Not a fault of the launch: hand it to whoever had the signal before.
        for (int i = 0; i < kNumSignals; i++)
            if (kSignals[i] == sig) sigaction(sig, &g_old_sa[i], nullptr);
        return;
    }
    g_in_launch = 0;
    g_fault_sig = sig;
    g_fault_code = si->si_code;
    g_fault_addr = si->si_addr;
    g_fault_write = -1;
#if defined(__x86_64__) && defined(REG_ERR)
    if (sig == SIGSEGV && ucv) {
        ucontext_t* uc = static_cast<ucontext_t*>(ucv);
        g_fault_write = (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
    }
#else
    (void)ucv;
#endif
    g_fault_fiber = static_cast<Fiber*>(pygpuemu_cur);
    siglongjmp(g_jmp, 1);
}

// Program counter of the interrupted code; 0 if unknown on this platform.
uintptr_t interrupted_pc(void* ucv) {
    if (!ucv) return 0;
    ucontext_t* uc = static_cast<ucontext_t*>(ucv);
#if defined(__x86_64__) && defined(REG_RIP)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

void on_timeout(int, siginfo_t* si, void* ucv) {
    if (!g_in_launch || !pthread_equal(pthread_self(), g_launch_thread)) return;
    if (si->si_code == SI_TIMER && si->si_value.sival_int != g_timer_gen) return;  // stale
    // Jump only out of code of the kernel's module or of this runtime: code in
    // libc (malloc, printf, memset...) may hold a lock that a jump would leave
    // taken.  Elsewhere, look again 0.1 ms later.
    uintptr_t pc = interrupted_pc(ucv);
    if (pc && !g_code_module.contains(pc) && !g_code_runtime.contains(pc)) {
        struct itimerspec its;
        memset(&its, 0, sizeof its);
        its.it_value.tv_nsec = kRetryNs;
        timer_settime(g_timer, 0, &its, nullptr);
        return;
    }
    g_in_launch = 0;
    g_fault_sig = timeout_signal();
    g_fault_code = si->si_code;
    g_fault_addr = nullptr;
    g_fault_write = -1;
    g_fault_fiber = static_cast<Fiber*>(pygpuemu_cur);
    siglongjmp(g_jmp, 1);
}

// Called with the timeout signal blocked in this thread.
void arm_watchdog(double seconds) {
    g_timer_armed = false;
    if (!(seconds > 0) || !g_timeout_handler) return;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = timeout_signal();
    sev.sigev_value.sival_int = g_timer_gen;
    sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &sev, &g_timer) != 0) return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)seconds;
    its.it_value.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    clock_gettime(CLOCK_MONOTONIC, &g_deadline);
    g_deadline.tv_sec += its.it_value.tv_sec;
    g_deadline.tv_nsec += its.it_value.tv_nsec;
    if (g_deadline.tv_nsec >= 1000000000L) {
        g_deadline.tv_sec++;
        g_deadline.tv_nsec -= 1000000000L;
    }
    g_timer_armed = true;
    timer_settime(g_timer, 0, &its, nullptr);
}

// True if an armed watchdog's deadline has passed (the launch overran it even
// if no signal interrupted it, e.g. because it ended while the handler waited
// for the kernel to leave libc).
bool deadline_passed() {
    if (!g_timer_armed) return false;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > g_deadline.tv_sec ||
           (now.tv_sec == g_deadline.tv_sec && now.tv_nsec >= g_deadline.tv_nsec);
}

// Called with the timeout signal blocked in this thread: deletes the timer
// and takes a signal it already sent off the thread's queue.
void disarm_watchdog() {
    if (g_timer_armed) {
        timer_delete(g_timer);
        g_timer_armed = false;
    }
    sigset_t s = timeout_set();
    struct timespec zero = {0, 0};
    while (sigtimedwait(&s, nullptr, &zero) > 0) {
    }
    g_timer_gen = (g_timer_gen + 1) & 0x3fffffff;
}

void install_handlers(double timeout_s) {
    if (!g_altstack) g_altstack = static_cast<char*>(malloc(kAltStackSize));
    stack_t ss;
    ss.ss_sp = g_altstack;
    ss.ss_size = kAltStackSize;
    ss.ss_flags = 0;
    sigaltstack(&ss, &g_old_ss);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sa.sa_mask = timeout_set();  // a fault handler is not interrupted by the watchdog
    for (int i = 0; i < kNumSignals; i++) sigaction(kSignals[i], &sa, &g_old_sa[i]);
    g_timeout_handler = false;
    if (timeout_s > 0) {
        sa.sa_sigaction = on_timeout;
        g_timeout_handler = sigaction(timeout_signal(), &sa, &g_old_timeout_sa) == 0;
    }
}

void restore_handlers() {
    for (int i = 0; i < kNumSignals; i++) sigaction(kSignals[i], &g_old_sa[i], nullptr);
    if (g_timeout_handler) sigaction(timeout_signal(), &g_old_timeout_sa, nullptr);
    g_timeout_handler = false;
    sigaltstack(&g_old_ss, nullptr);
}

std::string describe_address(uintptr_t a, int& kind) {
    kind = E_OOB;
    std::string s = fmt("address 0x%llx", (unsigned long long)a);
    if (a < 65536) return s + " (null or near-null pointer)";
    const size_t pg = page_size();
    if (g_dsm && a >= (uintptr_t)g_dsm - pg && a < (uintptr_t)g_dsm + g_dsm_cap + pg) {
        long long off = (long long)(a - (uintptr_t)g_dsm);
        return s + fmt(" is at byte offset %lld of dynamic shared memory, but the launch "
                       "requested only shared_mem=%zu bytes",
                       off, g_dsm_rw == (size_t)-1 ? (size_t)0 : g_dsm_rw);
    }
    if (g_stacks && a >= (uintptr_t)g_stacks &&
        a < (uintptr_t)g_stacks + g_stack_stride * kMaxThreads) {
        size_t rel = (a - (uintptr_t)g_stacks) % g_stack_stride;
        if (rel < pg) {
            kind = E_FAULT;
            return s + fmt(": stack overflow (each emulated thread has %zu KiB of stack; "
                           "large local arrays or deep recursion?)",
                           kStackSize / 1024);
        }
    }
    std::lock_guard<std::mutex> lock(g_buf_mu);
    if (const Buf* b = find_buf_locked(a, g_bufs)) {
        uintptr_t d = (uintptr_t)b->data, e = d + b->nbytes;
        if (a < d)
            return s + fmt(" is %llu bytes before the start of device buffer %s "
                           "(%zu bytes at 0x%llx)",
                           (unsigned long long)(d - a), b->desc.c_str(), b->nbytes,
                           (unsigned long long)d);
        if (a >= e)
            return s + fmt(" is %llu bytes past the end of device buffer %s "
                           "(%zu bytes at 0x%llx; byte offset %llu from its start)",
                           (unsigned long long)(a - e), b->desc.c_str(), b->nbytes,
                           (unsigned long long)d, (unsigned long long)(a - d));
        return s + fmt(" is inside device buffer %s at byte offset %llu (unexpected fault)",
                       b->desc.c_str(), (unsigned long long)(a - d));
    }
    for (const Buf& b : g_freed) {
        if (a >= (uintptr_t)b.map && a < (uintptr_t)b.map + b.maplen)
            return s + fmt(" belongs to device buffer %s that has been freed (use after free)",
                           b.desc.c_str());
    }
    return s + " is not inside any live device buffer (host pointer, freed buffer or wild "
               "pointer?)";
}

// Offsets (relative to the data start) of the first and last changed byte in
// [lo, hi); false if the canary there is intact.
bool changed_range(const char* lo, const char* hi, const char* data, long long& first,
                   long long& last) {
    static unsigned char pattern[4096];
    static bool init = false;
    if (!init) {
        memset(pattern, kCanary, sizeof pattern);
        init = true;
    }
    bool intact = true;
    for (const char* p = lo; p < hi && intact; p += sizeof pattern) {
        size_t n = (size_t)(hi - p) < sizeof pattern ? (size_t)(hi - p) : sizeof pattern;
        intact = memcmp(p, pattern, n) == 0;
    }
    if (intact) return false;
    bool found = false;
    for (const char* p = lo; p < hi; p++) {
        if ((unsigned char)*p == kCanary) continue;
        if (!found) first = p - data;
        last = p - data;
        found = true;
    }
    return found;
}

void check_canaries() {
    std::lock_guard<std::mutex> lock(g_buf_mu);
    for (auto& kv : g_bufs) {
        const Buf& b = kv.second;
        char* lo = b.map + page_size();
        char* hi = b.map + b.maplen - page_size();
        char* end = b.data + b.nbytes;
        long long first = 0, last = 0;
        std::string where;
        if (changed_range(lo, b.data, b.data, first, last)) {
            where = fmt("%lld bytes before the start", -first);
        } else if (changed_range(end, hi, b.data, first, last)) {
            where = fmt("%lld bytes past the end", first - (long long)b.nbytes);
        } else {
            continue;
        }
        // Restore the canaries so that each overwrite is reported once.
        memset(lo, kCanary, b.data - lo);
        memset(end, kCanary, hi - end);
        g_err = E_OOB;
        g_msg = fmt("kernel '%s': out-of-bounds write %s of device buffer %s (%zu bytes at "
                    "0x%llx): bytes at offsets %lld..%lld from its start were overwritten "
                    "(found in the canary after the launch, so the block and thread are "
                    "unknown; buffer sizes that are multiples of 4096 bytes make such writes "
                    "fault at once)",
                    g_kernel, where.c_str(), b.desc.c_str(), b.nbytes,
                    (unsigned long long)(uintptr_t)b.data, first, last);
        return;
    }
}

std::string fault_message(int& kind) {
    Fiber* f = g_fault_fiber;
    std::string who = f ? where(f) : ("kernel '" + std::string(g_kernel) + "' (in the emulator "
                                      "runtime, outside any thread)");
    const char* rw = g_fault_write == 1 ? "write" : g_fault_write == 0 ? "read" : "access";
    uintptr_t a = (uintptr_t)g_fault_addr;
    switch (g_fault_sig) {
        case SIGSEGV:
        case SIGBUS: {
            std::string d = describe_address(a, kind);
            if (kind == E_OOB)
                return who + fmt(": out-of-bounds %s: ", rw) + d;
            return who + fmt(": invalid %s: ", rw) + d;
        }
        case SIGFPE:
            kind = E_FAULT;
            return who + ": arithmetic exception (integer division by zero or overflow)";
        case SIGILL:
            kind = E_FAULT;
            return who + ": illegal instruction (__builtin_trap() or unreachable code reached)";
        case SIGABRT:
            kind = E_FAULT;
            return who + ": abort() was called (a failed host assert()?)";
    }
    if (g_fault_sig == timeout_signal()) {
        kind = E_TIMEOUT;
        if (g_timeout_after_end)  // the blocks ran to the end, but after the deadline
            return "kernel '" + std::string(g_kernel) +
                   fmt("': the launch took longer than the timeout of %g s", g_timeout_s);
        return who + fmt(": the launch did not finish within %g s (an infinite loop, or a "
                         "spin-wait on another block or on a thread that never runs: the "
                         "emulator runs blocks one after another and does not preempt threads; "
                         "a spin loop must call __nanosleep() to let others run)",
                         g_timeout_s);
    }
    kind = E_FAULT;
    return who + fmt(": signal %d", g_fault_sig);
}

}  // namespace

#include "pygpuemu_counters.inc"

// ---------------------------------------------------------------------------
// Device-side API used by the prelude.
EXPORT int pygpuemu_syncthreads(int kind, int pred) {
    Fiber* f = static_cast<Fiber*>(pygpuemu_cur);
    f->state = ST_BARRIER;
    g_bar_arrived++;
    g_bar_true += pred != 0;
    if (g_bar_arrived == g_nthreads) {
        g_bar_last_true = g_bar_true;
        g_bar_arrived = g_bar_true = 0;
        for (int i = 0; i < g_nthreads; i++)
            if (g_fibers[i].state == ST_BARRIER) make_runnable(&g_fibers[i]);
    }
    switch_away(f);
    switch (kind) {
        case PYGPUEMU_BAR_COUNT: return g_bar_last_true;
        case PYGPUEMU_BAR_AND: return g_bar_last_true == g_nthreads;
        case PYGPUEMU_BAR_OR: return g_bar_last_true != 0;
    }
    return 0;
}

namespace {
// Source lane per PTX shfl semantics; returns -1 if the lane keeps its own value.
inline int shfl_src(int op, int lane, int arg, int width) {
    int seg_start = lane & ~(width - 1);
    int seg_end = seg_start + width - 1;
    int j;
    switch (op) {
        case PYGPUEMU_W_IDX: return seg_start | (arg & (width - 1));
        case PYGPUEMU_W_UP: j = lane - arg; return (arg >= 0 && j >= seg_start) ? j : lane;
        case PYGPUEMU_W_DOWN: j = lane + arg; return (arg >= 0 && j <= seg_end) ? j : lane;
        case PYGPUEMU_W_XOR: j = lane ^ (arg & 31); return j <= seg_end ? j : lane;
    }
    return lane;
}

void resolve_warp(Warp& w, unsigned eff, int op) {
    unsigned long long acc = 0;
    switch (op) {
        case PYGPUEMU_W_IDX: case PYGPUEMU_W_UP: case PYGPUEMU_W_DOWN: case PYGPUEMU_W_XOR:
            for (int l = 0; l < 32; l++) {
                if (!(eff >> l & 1)) continue;
                Fiber* f = w.lane[l];
                int j = shfl_src(op, l, f->warg, f->wwidth);
                if (j != l && !(eff >> j & 1)) {
                    pygpuemu_cur = f;
                    if (!(w.exists >> j & 1))
                        fiber_fail(E_DEADLOCK,
                                   fmt("%s(mask=0x%08x) in lane %d reads from lane %d, which does "
                                       "not exist (blockDim is not a multiple of 32)",
                                       op_name(op), f->wmask, l, j));
                    fiber_fail(E_DEADLOCK,
                               fmt("%s(mask=0x%08x) in lane %d reads from lane %d, which is not "
                                   "in the mask (its value would be undefined on a GPU)",
                                   op_name(op), f->wmask, l, j));
                }
                f->wres = w.lane[j]->wval;
            }
            return;
        case PYGPUEMU_W_BALLOT: case PYGPUEMU_W_ANY: case PYGPUEMU_W_ALL: {
            unsigned b = 0;
            for (int l = 0; l < 32; l++)
                if ((eff >> l & 1) && w.lane[l]->wval) b |= 1u << l;
            acc = op == PYGPUEMU_W_BALLOT ? b : op == PYGPUEMU_W_ANY ? (b != 0) : (b == eff);
            break;
        }
        case PYGPUEMU_W_SYNC: acc = 0; break;
        case PYGPUEMU_W_RED_ADD: case PYGPUEMU_W_RED_AND: case PYGPUEMU_W_RED_OR:
        case PYGPUEMU_W_RED_XOR: case PYGPUEMU_W_RED_MIN: case PYGPUEMU_W_RED_MAX:
        case PYGPUEMU_W_RED_UMIN: case PYGPUEMU_W_RED_UMAX: {
            bool first = true;
            uint32_t u = 0;
            for (int l = 0; l < 32; l++) {
                if (!(eff >> l & 1)) continue;
                uint32_t v = (uint32_t)w.lane[l]->wval;
                if (first) { u = v; first = false; continue; }
                switch (op) {
                    case PYGPUEMU_W_RED_ADD: u += v; break;
                    case PYGPUEMU_W_RED_AND: u &= v; break;
                    case PYGPUEMU_W_RED_OR: u |= v; break;
                    case PYGPUEMU_W_RED_XOR: u ^= v; break;
                    case PYGPUEMU_W_RED_MIN: if ((int32_t)v < (int32_t)u) u = v; break;
                    case PYGPUEMU_W_RED_MAX: if ((int32_t)v > (int32_t)u) u = v; break;
                    case PYGPUEMU_W_RED_UMIN: if (v < u) u = v; break;
                    case PYGPUEMU_W_RED_UMAX: if (v > u) u = v; break;
                }
            }
            acc = u;
            break;
        }
        case PYGPUEMU_W_MATCH_ANY:
            for (int l = 0; l < 32; l++) {
                if (!(eff >> l & 1)) continue;
                unsigned m = 0;
                for (int k = 0; k < 32; k++)
                    if ((eff >> k & 1) && w.lane[k]->wval == w.lane[l]->wval) m |= 1u << k;
                w.lane[l]->wres = m;
            }
            return;
        case PYGPUEMU_W_MATCH_ALL: {
            bool same = true;
            unsigned long long v0 = 0;
            bool first = true;
            for (int l = 0; l < 32; l++) {
                if (!(eff >> l & 1)) continue;
                if (first) { v0 = w.lane[l]->wval; first = false; }
                else if (w.lane[l]->wval != v0) same = false;
            }
            acc = same ? ((1ull << 32) | eff) : 0;
            break;
        }
    }
    for (int l = 0; l < 32; l++)
        if (eff >> l & 1) w.lane[l]->wres = acc;
}
}  // namespace

EXPORT unsigned long long pygpuemu_warp(int op, unsigned mask, unsigned long long value, int arg,
                                        int width) {
    Fiber* f = static_cast<Fiber*>(pygpuemu_cur);
    Warp& w = g_warps[f->warp];
    if (!(mask >> f->lane & 1))
        fiber_fail(E_DEADLOCK, fmt("%s(mask=0x%08x) called by lane %d, which is not in the mask",
                                   op_name(op), mask, f->lane));
    if (op <= PYGPUEMU_W_XOR && (width < 1 || width > 32 || (width & (width - 1))))
        fiber_fail(E_LAUNCH, fmt("%s: width=%d is not a power of two in [1, 32]",
                                 op_name(op), width));
    f->wop = op;
    f->wmask = mask;
    f->warg = arg;
    f->wwidth = width;
    f->wval = value;
    f->state = ST_WARP;
    w.waiting |= 1u << f->lane;
    const unsigned eff = mask & w.exists;
    if ((w.waiting & eff) == eff) {
        bool complete = true;
        for (int l = 0; l < 32 && complete; l++)
            if ((eff >> l & 1) && w.lane[l]->wmask != mask) complete = false;
        if (complete) {
            for (int l = 0; l < 32; l++) {
                if (!(eff >> l & 1)) continue;
                Fiber* g = w.lane[l];
                if (g->wop != op) {
                    fiber_fail(E_DEADLOCK,
                               fmt("lanes of warp %d reached different warp collectives with "
                                   "mask 0x%08x: lane %d is in %s, lane %d (",
                                   f->warp, mask, f->lane, op_name(op), l) +
                                   thread_str(g) + ") is in " + op_name(g->wop));
                }
            }
            resolve_warp(w, eff, op);
            w.waiting &= ~eff;
            for (int l = 0; l < 32; l++)
                if (eff >> l & 1) make_runnable(w.lane[l]);
        }
    }
    switch_away(f);
    return f->wres;
}

EXPORT unsigned pygpuemu_activemask(void) {
    Fiber* f = static_cast<Fiber*>(pygpuemu_cur);
    const Warp& w = g_warps[f->warp];
    unsigned m = 0;
    for (int l = 0; l < 32; l++)
        if ((w.exists >> l & 1) && w.lane[l]->state != ST_EXITED) m |= 1u << l;
    return m;
}

EXPORT void pygpuemu_yield(void) {
    Fiber* f = static_cast<Fiber*>(pygpuemu_cur);
    make_runnable(f);
    switch_away(f);
}

EXPORT void* pygpuemu_dyn_smem(void) {
    std::call_once(g_dsm_once, dsm_init);
    return g_dsm;
}

EXPORT void pygpuemu_trap(const char* what, const char* file, int line) {
    fiber_fail(E_FAULT, fmt("%s (%s:%d)", what, file, line));
}

EXPORT long long pygpuemu_clock64(void) { return g_clock += 16; }

// ---------------------------------------------------------------------------
// Host-side API used from Python through ctypes.
EXPORT void* pygpuemu_alloc(unsigned long long nbytes, const char* desc) {
    const size_t pg = page_size();
    size_t data_pages = nbytes ? round_up(nbytes, pg) / pg : 1;
    size_t maplen = (data_pages + 2) * pg;
    void* m = mmap(nullptr, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* map = static_cast<char*>(m);
    mprotect(map, pg, PROT_NONE);
    mprotect(map + (data_pages + 1) * pg, pg, PROT_NONE);
    char* end = map + (data_pages + 1) * pg;
    char* data = reinterpret_cast<char*>(((uintptr_t)(end - nbytes)) & ~(uintptr_t)255);
    memset(map + pg, kCanary, data - (map + pg));
    memset(data, kPoison, nbytes);
    memset(data + nbytes, kCanary, end - (data + nbytes));
    std::lock_guard<std::mutex> lock(g_buf_mu);
    g_bufs[(uintptr_t)map] = Buf{map, maplen, data, (size_t)nbytes, desc ? desc : "?"};
    return data;
}

EXPORT int pygpuemu_free(void* data) {
    std::lock_guard<std::mutex> lock(g_buf_mu);
    const Buf* b = find_buf_locked((uintptr_t)data, g_bufs);
    if (!b || b->data != data) return -1;
    Buf copy = *b;
    munmap(copy.map, copy.maplen);
    g_bufs.erase((uintptr_t)copy.map);
    if (g_freed.size() < 256) {
        g_freed.push_back(copy);
    } else {
        g_freed[g_freed_pos] = copy;
        g_freed_pos = (g_freed_pos + 1) % 256;
    }
    return 0;
}

// 1 if [p, p+n) lies inside the data of one live buffer.
EXPORT int pygpuemu_is_device_ptr(const void* p, unsigned long long n) {
    std::lock_guard<std::mutex> lock(g_buf_mu);
    const Buf* b = find_buf_locked((uintptr_t)p, g_bufs);
    if (!b) return 0;
    uintptr_t a = (uintptr_t)p, d = (uintptr_t)b->data;
    return a >= d && a + n <= d + b->nbytes;
}

EXPORT unsigned long long pygpuemu_live_buffers(void) {
    std::lock_guard<std::mutex> lock(g_buf_mu);
    return g_bufs.size();
}

struct pygpuemu_launch_desc {
    void (*tramp)(void**);
    void** args;
    unsigned grid[3];
    unsigned block[3];
    unsigned long long dyn_smem;
    void* tls_anchor;
    unsigned long long seed;
    const char* kernel;
    double timeout_s;  // <= 0: no watchdog
    int count;                         // count memory accesses (module built for counting)
    unsigned long long sample_blocks;  // > 0: run only this many blocks, spread over the grid
};

EXPORT int pygpuemu_launch(const pygpuemu_launch_desc* d, char* msg, unsigned long long msglen) {
    g_err = E_OK;
    g_msg.clear();
    g_kernel = d->kernel;
    auto finish = [&](int rc) {
        if (msglen) {
            snprintf(msg, msglen, "%s", g_msg.c_str());
        }
        return rc;
    };
    std::string err;
    if (!ensure_stacks(err)) {
        g_msg = err;
        return finish(E_INTERNAL);
    }
    unsigned long long nthreads = (unsigned long long)d->block[0] * d->block[1] * d->block[2];
    if (nthreads < 1 || nthreads > kMaxThreads) {
        g_msg = fmt("kernel '%s': %llu threads per block", g_kernel, nthreads);
        return finish(E_LAUNCH);
    }
    if (d->dyn_smem > kDynSmemMax) {
        g_msg = fmt("kernel '%s': %llu bytes of dynamic shared memory", g_kernel, d->dyn_smem);
        return finish(E_LAUNCH);
    }
    g_nthreads = (int)nthreads;
    g_tramp = d->tramp;
    g_args = d->args;
    pygpuemu_gridDim = {d->grid[0], d->grid[1], d->grid[2]};
    pygpuemu_blockDim = {d->block[0], d->block[1], d->block[2]};

    // Static shared memory: the module's TLS block in this OS thread.
    static uintptr_t self_addr = (uintptr_t)&pygpuemu_launch;
    TlsQuery q{(uintptr_t)d->tls_anchor, nullptr, 0, {(uintptr_t)d->tramp, self_addr}, {}};
    dl_iterate_phdr(tls_cb, &q);
    if (!d->tls_anchor) q.begin = nullptr;
    g_code_module = q.code[0];
    g_code_runtime = q.code[1];
    // Dynamic shared memory: make exactly the pages needed accessible.
    std::call_once(g_dsm_once, dsm_init);
    size_t dyn = (size_t)d->dyn_smem;
    size_t rw = round_up(dyn, page_size());
    if (rw != g_dsm_rw) {
        mprotect(g_dsm, g_dsm_cap, PROT_NONE);
        if (rw) mprotect(g_dsm, rw, PROT_READ | PROT_WRITE);
        g_dsm_rw = rw;
    }
    counters_begin(d->count != 0, q.begin, q.size, dyn);

#if PYGPUEMU_ASM_SWITCH
    __asm__ volatile("stmxcsr %0" : "=m"(g_fpctl[0]));
    uint16_t fpucw;
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    g_fpctl[1] = fpucw;
#endif

    // The watchdog's signal stays blocked in this thread until sigsetjmp has
    // returned 0, and is blocked again (by siglongjmp, which restores the mask
    // saved here, or explicitly) before the launch ends.
    sigset_t tmo = timeout_set(), old_mask;
    pthread_sigmask(SIG_BLOCK, &tmo, &old_mask);
    install_handlers(d->timeout_s);
    g_launch_thread = pthread_self();
    g_fault_fiber = nullptr;
    g_timeout_after_end = false;
    g_timeout_s = d->timeout_s;
    if (sigsetjmp(g_jmp, 1) == 0) {
        g_in_launch = 1;
        arm_watchdog(d->timeout_s);
        pthread_sigmask(SIG_UNBLOCK, &tmo, nullptr);
        // Blocks run one after another in a seeded pseudo-random order
        // (i -> (a*i + b) mod n with gcd(a, n) = 1), so that results that
        // depend on the order of blocks differ between seeds too.
        const uint64_t gx = d->grid[0], gy = d->grid[1];
        const uint64_t n = gx * gy * d->grid[2];
        uint64_t rs = d->seed ^ 0x5851F42D4C957F2Dull;
        uint64_t a = 1, b = 0;
        if (n > 1) {
            b = splitmix(rs) % n;
            for (int tries = 0; tries < 64; tries++) {
                uint64_t c = 1 + splitmix(rs) % (n - 1), x = c, y = n;
                while (y) { uint64_t t = x % y; x = y; y = t; }
                if (x == 1) { a = c; break; }
            }
        }
        // A sample runs `sample` blocks spread evenly over the grid, the first and the last
        // included (counters extrapolate from them; the other blocks' results are not written).
        const uint64_t sample = d->sample_blocks && d->sample_blocks < n ? d->sample_blocks : 0;
        for (uint64_t i = 0; i < (sample ? sample : n) && !g_err; i++) {
            uint64_t lin = sample ? (sample == 1 ? 0 : (uint64_t)((unsigned __int128)i * (n - 1) / (sample - 1)))
                                  : (uint64_t)(((unsigned __int128)a * i + b) % n);
            if (q.begin) memset(q.begin, kPoison, q.size);
            if (rw) memset(g_dsm, kPoison, rw);
            run_block((unsigned)(lin % gx), (unsigned)(lin / gx % gy), (unsigned)(lin / (gx * gy)),
                      d->seed);
        }
        g_in_launch = 0;  // a watchdog signal from here on is dropped
        pthread_sigmask(SIG_BLOCK, &tmo, nullptr);
        if (!g_err && deadline_passed()) {
            // A launch that ran longer than the timeout fails, whether or not
            // the signal got to interrupt it, so the outcome does not depend
            // on when the signal arrived.
            g_fault_sig = timeout_signal();
            g_fault_fiber = nullptr;
            g_timeout_after_end = true;
            int kind = E_TIMEOUT;
            g_msg = fault_message(kind);
            g_err = kind;
        }
    } else {
        g_in_launch = 0;
        int kind = E_FAULT;
        g_msg = fault_message(kind);
        g_err = kind;
    }
    disarm_watchdog();
    g_counting = false;
    pygpuemu_cur = nullptr;
    restore_handlers();
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    if (!g_err) check_canaries();
    fflush(stdout);
    return finish(g_err);
}

// Rewrites the canary of every live buffer (e.g. after a test deliberately
// provoked an out-of-bounds write).
EXPORT void pygpuemu_reset_canaries(void) {
    std::lock_guard<std::mutex> lock(g_buf_mu);
    for (auto& kv : g_bufs) {
        Buf& b = kv.second;
        char* lo = b.map + page_size();
        char* hi = b.map + b.maplen - page_size();
        memset(lo, kCanary, b.data - lo);
        memset(b.data + b.nbytes, kCanary, hi - (b.data + b.nbytes));
    }
}
