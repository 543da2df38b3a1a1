/*
 * Run queues: where scheduled actors wait for a worker.
 *
 * tr__ring: one per worker, a bounded ring of TR__RING_CAP slots. Only the
 * owner pushes (at tail); the owner pops single items and thieves take half
 * the ring, both at head with one compare-and-swap on a 32-bit index, so
 * stealing needs no double-width CAS. FIFO, so an actor rescheduled after its
 * batch goes behind the others.
 *
 * tr__inject: one per system, an MPSC queue of actors (the actor's run_link
 * is the node) for threads that are not this system's workers and for ring
 * overflow. Any worker may consume, one at a time: a worker that finds the
 * consumer flag taken simply looks elsewhere, so nobody ever waits on it.
 * `len` counts linked entries; it is the variable a parking worker and an
 * injecting thread use to avoid a lost wake-up (see worker.c).
 */
#ifndef TR_RUNQ_H
#define TR_RUNQ_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mpsc.h"

#define TR__RING_CAP 1024u /* a wave of 1,000 spawns fits */
#define TR__CACHELINE 64

struct tr__actor;

typedef struct tr__ring {
	alignas(TR__CACHELINE) _Atomic uint32_t head; /* owner and thieves */
	alignas(TR__CACHELINE) _Atomic uint32_t tail; /* owner writes */
	_Atomic(struct tr__actor *) slot[TR__RING_CAP];
} tr__ring;

/* Owner only; wait-free. False if full. */
static inline bool tr__ring_push(tr__ring *r, struct tr__actor *a)
{
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	/* acquire: a thief's read of the slot we are about to reuse happened
	 * before its CAS moved head past it */
	uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);

	if (t - h >= TR__RING_CAP)
		return false;
	atomic_store_explicit(&r->slot[t % TR__RING_CAP], a, memory_order_relaxed);
	atomic_store_explicit(&r->tail, t + 1, memory_order_release);
	return true;
}

/* Owner or thief; lock-free. NULL if empty. */
static inline struct tr__actor *tr__ring_pop(tr__ring *r)
{
	uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);

	for (;;) {
		uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
		struct tr__actor *a;

		if (h == t)
			return NULL;
		/* May be overwritten by a later push once head moved past h;
		 * then the CAS below fails and the value is discarded. */
		a = atomic_load_explicit(&r->slot[h % TR__RING_CAP], memory_order_relaxed);
		if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + 1,
							  memory_order_acq_rel,
							  memory_order_acquire))
			return a;
	}
}

/* Thief only; lock-free. Takes half of what `r` holds (rounded up, at most
 * `max`) into out[] with one CAS; returns how many (0 if empty). Same
 * validation as tr__ring_pop: slots read before the CAS are discarded if
 * it fails. */
static inline unsigned tr__ring_steal(tr__ring *r, struct tr__actor **out, unsigned max)
{
	uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);

	for (;;) {
		uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
		uint32_t n = t - h;

		if (n == 0)
			return 0;
		if (n > TR__RING_CAP) /* h went stale: the CAS will fail */
			n = TR__RING_CAP;
		n -= n / 2;
		if (n > max)
			n = max;
		for (uint32_t i = 0; i < n; i++)
			out[i] = atomic_load_explicit(&r->slot[(h + i) % TR__RING_CAP],
						      memory_order_relaxed);
		if (atomic_compare_exchange_weak_explicit(&r->head, &h, h + n,
							  memory_order_acq_rel,
							  memory_order_acquire))
			return n;
	}
}

/* Any thread; wait-free; a hint (exact only for the owner about pushes). */
static inline uint32_t tr__ring_len(tr__ring *r)
{
	uint32_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint32_t h = atomic_load_explicit(&r->head, memory_order_acquire);
	return t - h;
}

typedef struct tr__inject {
	alignas(TR__CACHELINE) _Atomic(uintptr_t) head;
	tr__link stub;
	_Atomic int64_t len;
	alignas(TR__CACHELINE) _Atomic bool busy; /* consumer flag */
	tr__link *tail;
} tr__inject;

static inline tr__mpsc_ends tr__inject_ends(tr__inject *q)
{
	return (tr__mpsc_ends){&q->head, &q->tail, &q->stub};
}

#endif /* TR_RUNQ_H */
