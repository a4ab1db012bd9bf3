/* threads.h -- a fixed pool of worker threads that runs one parallel loop at a time, spinning between the loops of a forward pass.
 *
 * The caller of tpool_run works too, so a pool of N threads starts N-1
 * workers. Tasks are handed out one at a time from a shared counter, so
 * uneven tasks balance themselves. Workers spin briefly after a loop (the
 * next one of the same step follows within microseconds) and then sleep. */
#ifndef LLMCGI_THREADS_H
#define LLMCGI_THREADS_H

struct tpool;

/* Runs task number `task` (0 <= task < n_tasks) on thread `thread` (0 <= thread < threads). */
typedef void (*tpool_fn)(void *ctx, int task, int thread);

/* Starts a pool of n_threads (>= 1, the caller included). Returns 0 and a new
 * pool in *out (free with tpool_free), or -1 when a thread could not start. */
int tpool_new(int n_threads, struct tpool **out);

/* Stops and joins the workers and frees p (NULL is fine). */
void tpool_free(struct tpool *p);

/* Runs fn for every task in [0, n_tasks) across the pool and returns when all
 * are done. Only one thread may call tpool_run on a pool at a time. */
void tpool_run(struct tpool *p, tpool_fn fn, void *ctx, int n_tasks);

int tpool_threads(const struct tpool *p);

/* The number of online CPUs (at least 1). */
int tpool_online_cpus(void);

#endif
