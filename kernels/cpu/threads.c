/* threads.c -- a fixed pool of worker threads that runs one parallel loop at a time, spinning between the loops of a forward pass. */
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long a worker spins for the next loop before it sleeps: about 1-2 ms. */
#define SPIN_ROUNDS 20000

struct tpool {
    int n_threads;
    pthread_t *workers;            /* n_threads - 1 */

    /* The current loop. Written by the caller before `generation` moves. */
    tpool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
    atomic_int finished;           /* workers done with the current generation */
    atomic_uint generation;        /* bumped once per loop; workers wait for it to move */
    atomic_bool stop;

    pthread_mutex_t lock;          /* guards sleeping workers' wait */
    pthread_cond_t wake;
    atomic_int sleepers;
};

static void run_tasks(struct tpool *p, int thread)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t, thread);
    }
}

struct worker_arg {
    struct tpool *p;
    int thread;
};

static void *worker_main(void *argp)
{
    struct worker_arg arg = *(struct worker_arg *)argp;
    free(argp);
    struct tpool *p = arg.p;
    unsigned seen = 0;      /* the generation at tpool_new: a worker that starts late still runs loop 1 */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < SPIN_ROUNDS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleepers, 1);
            /* seq_cst with the caller's bump and its read of sleepers: either
             * it sees us asleep and broadcasts, or we see the new generation. */
            while (atomic_load(&p->generation) == seen &&
                   !atomic_load_explicit(&p->stop, memory_order_acquire))
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
            spins = 0;
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        seen = g;
        run_tasks(p, arg.thread);
        atomic_fetch_add_explicit(&p->finished, 1, memory_order_release);
    }
}

int tpool_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

int tpool_new(int n_threads, struct tpool **out)
{
    *out = NULL;
    if (n_threads < 1)
        n_threads = 1;
    struct tpool *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return -1;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *a = malloc(sizeof *a);
        if (a) {
            a->p = p;
            a->thread = i;
        }
        if (!a || pthread_create(&p->workers[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            p->n_threads = i;       /* join only the ones that started */
            tpool_free(p);
            return -1;
        }
    }
    *out = p;
    return 0;
}

void tpool_free(struct tpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->workers[i - 1], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    free(p->workers);
    free(p);
}

void tpool_run(struct tpool *p, tpool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    run_tasks(p, 0);
    /* Wait for every worker to be out of this loop (so the next one may
     * rewrite fn/ctx). On a busy machine a worker may not be running at all:
     * after a short spin, give it our CPU. */
    for (int spins = 0; atomic_load_explicit(&p->finished, memory_order_acquire) < p->n_threads - 1; spins++) {
        if (spins < 2000)
            cpu_relax();
        else
            sched_yield();
    }
}

int tpool_threads(const struct tpool *p)
{
    return p->n_threads;
}
