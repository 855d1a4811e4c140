// A small thread pool inside the native library, for the GEMM and convolution blocks
// (cpu_src/sgemm.cpp): `pygpu::pool::run(n, threads, f)` calls f(0) .. f(n - 1) on the caller and
// up to threads - 1 persistent workers, each taking the next index from a shared counter, and
// returns when all are done.
//
// Why not the Python pool (pygpu_ops/_runtime/threads.py): its workers sleep on a futex between
// calls, and on this 2-vCPU VM a woken worker was often placed on the caller's CPU, preempting
// it, so a ~0.6 ms convolution ran its blocks one after the other on one core (traced: the
// caller descheduled for ~1 ms mid-block while the worker ran its blocks, the other CPU idle).
// These workers instead spin on a generation counter for SPIN_US after their last job, as
// OpenMP's do, so back-to-back calls find them running on their own CPUs; after that they
// block on a condition variable (no CPU used while idle).
//
// Protocol: callers are serialized by `submit` (a second caller that finds it taken runs its
// indices alone, so nesting and concurrent Python threads cannot deadlock). The job lives in
// static storage; `active` counts workers inside a job, and the caller clears `current` and then
// waits for `active` to reach 0 (seq_cst on both sides), so no worker touches a job after run
// returns. After fork() the child forgets the parent's workers (pthread_atfork) and starts its own.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYGPU_PAUSE() _mm_pause()
#else
#define PYGPU_PAUSE() ((void)0)
#endif

namespace pygpu {
namespace pool {

constexpr int MAX_WORKERS = 255;
constexpr int64_t SPIN_US = 1000;     // a worker spins this long after its last job

struct Job {
    void (*fn)(void*, int64_t);
    void* ctx;
    int64_t n;
    int workers;                      // workers 0 .. workers - 1 take part
    std::atomic<int64_t> next{0}, done{0};
};

struct State {
    std::mutex submit, mu;
    std::condition_variable cv;
    std::atomic<uint64_t> gen{0};
    std::atomic<Job*> current{nullptr};
    std::atomic<int> active{0};
    int started = 0;
    Job job;
};

inline State& state() {
    alignas(State) static unsigned char storage[sizeof(State)];
    static State* s = [] {
        pthread_atfork(nullptr, nullptr, [] { new (storage) State(); });   // the child: a fresh pool
        return new (storage) State();
    }();
    return *s;
}

inline void take(Job* j) {
    for (;;) {
        const int64_t k = j->next.fetch_add(1);
        if (k >= j->n) return;
        j->fn(j->ctx, k);
        j->done.fetch_add(1, std::memory_order_release);
    }
}

inline void* worker(void* arg) {
    const int id = (int)(intptr_t)arg;
    State& s = state();
    uint64_t seen = s.gen.load(std::memory_order_acquire);
    for (;;) {
        auto t0 = std::chrono::steady_clock::now();
        for (int spins = 0; s.gen.load(std::memory_order_acquire) == seen; ++spins) {
            PYGPU_PAUSE();
            if ((spins & 255) == 255 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(SPIN_US)) {
                std::unique_lock<std::mutex> lk(s.mu);
                s.cv.wait(lk, [&] { return s.gen.load(std::memory_order_acquire) != seen; });
            }
        }
        seen = s.gen.load(std::memory_order_acquire);
        s.active.fetch_add(1);
        Job* j = s.current.load();
        if (j && id < j->workers) take(j);
        s.active.fetch_sub(1);
    }
    return nullptr;
}

template <class F>
void run(int64_t n, int threads, F& f) {
    auto call = [](void* c, int64_t k) { (*static_cast<F*>(c))(k); };
    if (n <= 0) return;
    State& s = state();
    threads = threads < 1 ? 1 : threads > MAX_WORKERS + 1 ? MAX_WORKERS + 1 : threads;
    if (threads > n) threads = (int)n;
    std::unique_lock<std::mutex> lk(s.submit, std::try_to_lock);
    if (threads == 1 || !lk.owns_lock()) {    // one thread, or the pool busy: the caller alone
        for (int64_t k = 0; k < n; ++k) f(k);
        return;
    }
    while (s.started < threads - 1) {          // workers start on first need and then persist
        pthread_t t;
        if (pthread_create(&t, nullptr, worker, (void*)(intptr_t)s.started) != 0) break;
        pthread_detach(t);
        ++s.started;
    }
    Job& j = s.job;
    j.fn = call;
    j.ctx = &f;
    j.n = n;
    j.workers = threads - 1;
    j.next.store(0);
    j.done.store(0);
    s.current.store(&j);
    {
        std::lock_guard<std::mutex> g(s.mu);   // a worker between its check and wait sees the bump
        s.gen.fetch_add(1, std::memory_order_release);
    }
    s.cv.notify_all();
    take(&j);
    while (j.done.load(std::memory_order_acquire) < n) PYGPU_PAUSE();
    s.current.store(nullptr);
    while (s.active.load() != 0) PYGPU_PAUSE();
}

}  // namespace pool
}  // namespace pygpu
