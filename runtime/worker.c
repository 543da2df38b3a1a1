/*
 * Workers: the scheduler loop, work stealing, idle spinning and parking.
 *
 * Where a scheduled actor goes:
 *  - woken by a send from one of this system's workers: that worker's
 *    next_slot, so a reply runs on the core that holds its cache lines; the
 *    actor it displaces goes to the worker's ring;
 *  - woken from any other thread, or a full ring: the system's inject queue.
 * A worker takes the next_slot first, but at most TR__LIFO_STREAK times in a
 * row while its ring has others waiting, and looks at the inject queue every
 * TR__INJECT_EVERY ticks, so neither source can starve the other.
 *
 * Parking without lost wake-ups. Work that only a parked worker could run
 * sits in the inject queue (a worker's own ring is drained by that worker,
 * which is awake while it is non-empty). An injector increments inject.len
 * and then reads `parked`; a worker about to sleep increments `parked` and
 * then reads inject.len; all four are seq_cst, so at least one of them sees
 * the other. Rings are also checked before sleeping, and pushes onto a ring
 * wake a parked worker when nobody is searching, but missing that only costs
 * parallelism: the ring's owner runs the work.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int tr__futex_wait(_Atomic uint32_t *addr, uint32_t expect, int64_t timeout_ns)
{
	struct timespec ts, *tsp = NULL;

	tr__worker_before_block(); /* what we wait for may need it */
	if (timeout_ns >= 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000);
		ts.tv_nsec = (long)(timeout_ns % 1000000000);
		tsp = &ts;
	}
	return (int)syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expect, tsp, NULL, 0);
}

void tr__futex_wake(_Atomic uint32_t *addr, int n)
{
	(void)syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static void tr__ring_push_or_inject(tr__worker *w, tr__actor *a);

static inline void tr__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

void tr__worker_before_block(void)
{
	tr__worker *w = tr__ctx.worker;
	tr__actor *a;

	if (!w)
		return;
	tr__outbox_flush(w);
	if ((a = w->next_slot)) {
		w->next_slot = NULL;
		tr__ring_push_or_inject(w, a);
	}
}

/* ---------------------------------------------------------------- waking */

/* Wakes worker w if it sleeps; true if this call did. The caller made its
 * work visible first with a seq_cst store that a parker reads after
 * announcing itself; the load here is seq_cst too, so it sees a parker's
 * sleep=1 that precedes the caller's store (see the header comment). */
static bool tr__wake_worker(tr_system *sys, tr__worker *w)
{
	uint32_t one = 1;

	if (atomic_load_explicit(&w->sleep, memory_order_seq_cst) == 1 &&
	    atomic_compare_exchange_strong_explicit(&w->sleep, &one, 0, memory_order_seq_cst,
						    memory_order_relaxed)) {
		atomic_fetch_sub_explicit(&sys->parked, 1, memory_order_seq_cst);
		tr__futex_wake(&w->sleep, 1);
		return true;
	}
	return false;
}

static bool tr__wake_one(tr_system *sys)
{
	unsigned n = sys->nworkers;
	unsigned start = atomic_fetch_add_explicit(&sys->wake_rr, 1, memory_order_relaxed);

	for (unsigned i = 0; i < n; i++)
		if (tr__wake_worker(sys, &sys->workers[(start + i) % n]))
			return true;
	return false;
}

void tr__wake_all(tr_system *sys)
{
	while (atomic_load_explicit(&sys->parked, memory_order_seq_cst) > 0)
		if (!tr__wake_one(sys))
			sched_yield(); /* a worker is between "parked++" and "sleep=1" */
}

/* --------------------------------------------------------- inject queue */

static void tr__inject_push(tr_system *sys, tr__actor *a)
{
	tr__mpsc_push(&sys->inject.head, &a->run_link);
	atomic_fetch_add_explicit(&sys->inject.len, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&sys->parked, memory_order_seq_cst) > 0)
		tr__wake_one(sys);
}

static tr__actor *tr__inject_pop(tr_system *sys)
{
	tr__inject *q = &sys->inject;
	tr__link *l;

	if (atomic_load_explicit(&q->len, memory_order_relaxed) <= 0)
		return NULL;
	if (atomic_exchange_explicit(&q->busy, true, memory_order_acquire))
		return NULL; /* another worker is consuming: look elsewhere */
	l = tr__mpsc_pop(tr__inject_ends(q));
	atomic_store_explicit(&q->busy, false, memory_order_release);
	if (!l || l == TR__MPSC_RETRY)
		return NULL;
	atomic_fetch_sub_explicit(&q->len, 1, memory_order_relaxed);
	return caa_container_of(l, tr__actor, run_link);
}

/* ---------------------------------------------------------- pinned actors */

/* A pinned actor goes to its home worker's own queue, from any thread. */
static void tr__pinned_push(tr_system *sys, tr__actor *a)
{
	tr__worker *h = &sys->workers[a->home - 1];

	tr__mpsc_push(&h->pinned.head, &a->run_link);
	atomic_fetch_add_explicit(&h->pinned.len, 1, memory_order_seq_cst);
	if (h != tr__my_worker(sys))
		tr__wake_worker(sys, h);
}

/* Owner only: no consumer flag needed. */
static tr__actor *tr__pinned_pop(tr__worker *w)
{
	tr__link *l;

	if (atomic_load_explicit(&w->pinned.len, memory_order_relaxed) <= 0)
		return NULL;
	l = tr__mpsc_pop(tr__inject_ends(&w->pinned));
	if (!l || l == TR__MPSC_RETRY)
		return NULL;
	atomic_fetch_sub_explicit(&w->pinned.len, 1, memory_order_relaxed);
	return caa_container_of(l, tr__actor, run_link);
}

/* ------------------------------------------------------------ scheduling */

static void tr__ring_push_or_inject(tr__worker *w, tr__actor *a)
{
	tr_system *sys = w->sys;

	if (a->home) {
		tr__pinned_push(sys, a);
		return;
	}
	if (!tr__ring_push(&w->ring, a)) {
		tr__inject_push(sys, a);
		return;
	}
	/* a hint: a parked worker could help, and nobody is looking */
	if (atomic_load_explicit(&sys->parked, memory_order_relaxed) > 0 &&
	    atomic_load_explicit(&sys->searching, memory_order_relaxed) == 0)
		tr__wake_one(sys);
}

void tr__schedule(tr_system *sys, tr__actor *a)
{
	tr__worker *w = tr__my_worker(sys);

	if (a->home) {
		tr__pinned_push(sys, a);
		return;
	}
	if (!w) {
		tr__inject_push(sys, a);
		return;
	}
	if (w->next_slot)
		tr__ring_push_or_inject(w, w->next_slot);
	w->next_slot = a;
}

static uint32_t tr__rand(tr__worker *w)
{
	uint32_t x = w->rng; /* xorshift32: victim choice only */
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return w->rng = x;
}

static tr__actor *tr__steal(tr__worker *w)
{
	tr_system *sys = w->sys;
	unsigned n = sys->nworkers, start = tr__rand(w) % n;

	for (unsigned i = 0; i < n; i++) {
		tr__worker *v = &sys->workers[(start + i) % n];

		tr__actor *got[TR__STEAL_MAX];
		unsigned k;

		if (v == w)
			continue;
		/* half the victim's queue at once: one CAS on its line for
		 * many actors, not one per actor (a spawn wave is 1,000) */
		k = tr__ring_steal(&v->ring, got, TR__STEAL_MAX);
		if (k) {
			for (unsigned j = 1; j < k; j++)
				if (!tr__ring_push(&w->ring, got[j]))
					tr__inject_push(sys, got[j]);
			tr__count(sys, TR__C_STEALS, k);
			return got[0];
		}
	}
	return NULL;
}

static tr__actor *tr__find_work(tr__worker *w)
{
	tr__actor *a;

	if ((a = tr__pinned_pop(w)))
		return a;
	if (++w->tick % TR__INJECT_EVERY == 0 && (a = tr__inject_pop(w->sys)))
		return a;
	if (w->next_slot && (w->streak < TR__LIFO_STREAK || tr__ring_len(&w->ring) == 0)) {
		a = w->next_slot;
		w->next_slot = NULL;
		w->streak++;
		return a;
	}
	w->streak = 0;
	if ((a = tr__ring_pop(&w->ring)))
		return a;
	if (w->next_slot) { /* ring was emptied by thieves meanwhile */
		a = w->next_slot;
		w->next_slot = NULL;
		return a;
	}
	if ((a = tr__inject_pop(w->sys)))
		return a;
	return tr__steal(w);
}

/* --------------------------------------------------------------- parking */

static bool tr__work_visible(tr__worker *w)
{
	tr_system *sys = w->sys;

	if (atomic_load_explicit(&sys->inject.len, memory_order_seq_cst) > 0 ||
	    atomic_load_explicit(&w->pinned.len, memory_order_seq_cst) > 0)
		return true;
	for (unsigned i = 0; i < sys->nworkers; i++)
		if (tr__ring_len(&sys->workers[i].ring))
			return true;
	return false;
}

static void tr__park(tr__worker *w)
{
	tr_system *sys = w->sys;
	uint32_t one = 1;

	tr__actor_flush_dead(w);
	/* parked first: a waker that claims us then finds `parked` counted */
	atomic_fetch_add_explicit(&sys->parked, 1, memory_order_seq_cst);
	atomic_store_explicit(&w->sleep, 1, memory_order_seq_cst);
	if (tr__work_visible(w) ||
	    atomic_load_explicit(&sys->state, memory_order_seq_cst) >= TR__S_STOPPING) {
		/* changed our mind; if a waker claimed us first it also
		 * took us off `parked` */
		if (atomic_compare_exchange_strong_explicit(&w->sleep, &one, 0,
							    memory_order_seq_cst,
							    memory_order_relaxed))
			atomic_fetch_sub_explicit(&sys->parked, 1, memory_order_seq_cst);
		return;
	}
	tr__count(sys, TR__C_PARKS, 1);
	while (atomic_load_explicit(&w->sleep, memory_order_acquire) == 1)
		tr__futex_wait(&w->sleep, 1, -1);
	tr__count(sys, TR__C_WAKEUPS, 1);
}

static uint64_t tr__mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Looks for work for spin_us before giving up. */
static tr__actor *tr__search(tr__worker *w)
{
	tr_system *sys = w->sys;
	uint64_t deadline = 0;
	tr__actor *a = NULL;

	atomic_fetch_add_explicit(&sys->searching, 1, memory_order_relaxed);
	for (unsigned i = 0;; i++) {
		if ((a = tr__pinned_pop(w)) || (a = tr__inject_pop(sys)) || (a = tr__steal(w)))
			break;
		if (atomic_load_explicit(&sys->state, memory_order_relaxed) >= TR__S_STOPPING)
			break;
		if ((i & 63) == 0) {
			uint64_t now = tr__mono_ns();
			if (!deadline)
				deadline = now + (uint64_t)sys->cfg.spin_us * 1000u;
			else if (now >= deadline)
				break;
		}
		tr__cpu_relax();
	}
	atomic_fetch_sub_explicit(&sys->searching, 1, memory_order_relaxed);
	return a;
}

void *tr__worker_main(void *arg)
{
	tr__worker *w = arg;
	tr_system *sys = w->sys;

	tr__ctx.worker = w;
	tr__rcu_register_slow();
	urcu_memb_set_thread_call_rcu_data(sys->crdp);

	for (;;) {
		tr__actor *a = tr__find_work(w);

		if (!a)
			a = tr__search(w);
		if (!a) {
			if (atomic_load_explicit(&sys->state, memory_order_acquire) >= TR__S_STOPPING)
				break;
			tr__park(w);
			continue;
		}
		/* keep running an actor that still has messages while nothing
		 * else waits here: no queue round trip */
		while (tr__actor_run(w, a)) {
			if (w->next_slot || tr__ring_len(&w->ring) ||
			    atomic_load_explicit(&w->pinned.len, memory_order_relaxed) > 0 ||
			    atomic_load_explicit(&sys->inject.len, memory_order_relaxed) > 0) {
				tr__ring_push_or_inject(w, a);
				break;
			}
		}
	}
	tr__actor_flush_dead(w);
	urcu_memb_set_thread_call_rcu_data(NULL);
	tr__ctx.worker = NULL;
	return NULL;
}
