/*
 * Intrusive multi-producer single-consumer queue (Vyukov), with an embedded
 * stub node and an IDLE bit in the producers' word.
 *
 * Push costs one atomic exchange and is wait-free. The IDLE bit is set only by
 * the consumer, through tr__mpsc_mark_idle(), and it succeeds only when the
 * queue is empty; the push that finds it set returns true, so exactly one
 * producer learns "I made an idle queue non-empty" and schedules its consumer.
 * A queue that never calls tr__mpsc_mark_idle() is a plain MPSC queue.
 *
 * The three parts are passed separately so that a record can keep the
 * producer side (head, stub) and the consumer side (tail) on different cache
 * lines. Memory orders: the exchange is acq_rel so a producer that finds the
 * queue idle also sees everything the last consumer did before going idle;
 * links are published with release stores and read with acquire loads
 * (no standalone fences: ThreadSanitizer cannot see them).
 */
#ifndef TR_MPSC_H
#define TR_MPSC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "troupe/message.h"

#define TR__MPSC_IDLE ((uintptr_t)1)
/* Returned by pop when a producer is between its exchange and its link:
 * the queue is not empty, but the next node is not reachable yet. */
#define TR__MPSC_RETRY ((tr__link *)(uintptr_t)1)

typedef struct tr__mpsc_ends {
	_Atomic(uintptr_t) *head;
	tr__link **tail;
	tr__link *stub;
} tr__mpsc_ends;

/* Initialises an empty queue; `idle` sets the IDLE bit. Not thread-safe. */
static inline void tr__mpsc_init(tr__mpsc_ends q, bool idle)
{
	atomic_store_explicit(&q.stub->next, NULL, memory_order_relaxed);
	*q.tail = q.stub;
	atomic_store_explicit(q.head, (uintptr_t)q.stub | (idle ? TR__MPSC_IDLE : 0),
			      memory_order_release);
}

/* Any thread; wait-free. Appends the chain first .. last, already linked
 * through `next` by the caller, with one exchange. Returns true if the queue
 * was idle (the caller must now schedule the consumer). */
static inline bool tr__mpsc_push_chain(_Atomic(uintptr_t) *head, tr__link *first, tr__link *last)
{
	uintptr_t prev;

	atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
	prev = atomic_exchange_explicit(head, (uintptr_t)last, memory_order_acq_rel);
	/* the release also publishes the links inside the chain */
	atomic_store_explicit(&((tr__link *)(prev & ~TR__MPSC_IDLE))->next, first,
			      memory_order_release);
	return (prev & TR__MPSC_IDLE) != 0;
}

/* Any thread; wait-free. As tr__mpsc_push_chain for one node. */
static inline bool tr__mpsc_push(_Atomic(uintptr_t) *head, tr__link *n)
{
	return tr__mpsc_push_chain(head, n, n);
}

/* Single consumer only. Returns the oldest node, NULL if empty, or
 * TR__MPSC_RETRY if a push is half done (try again later). */
static inline tr__link *tr__mpsc_pop(tr__mpsc_ends q)
{
	tr__link *tail = *q.tail;
	tr__link *next = atomic_load_explicit(&tail->next, memory_order_acquire);

	if (tail == q.stub) {
		if (!next)
			return atomic_load_explicit(q.head, memory_order_acquire) ==
					       (uintptr_t)q.stub
				       ? NULL
				       : TR__MPSC_RETRY;
		*q.tail = next;
		tail = next;
		next = atomic_load_explicit(&next->next, memory_order_acquire);
	}
	if (next) {
		*q.tail = next;
		return tail;
	}
	/* tail is the last linked node; unless it is also the head, a producer
	 * is mid-push behind it. */
	if (atomic_load_explicit(q.head, memory_order_acquire) != (uintptr_t)tail)
		return TR__MPSC_RETRY;
	/* Put the stub back behind tail so tail can be handed out. */
	tr__mpsc_push(q.head, q.stub);
	next = atomic_load_explicit(&tail->next, memory_order_acquire);
	if (next) {
		*q.tail = next;
		return tail;
	}
	return TR__MPSC_RETRY;
}

/* Single consumer only. Sets the IDLE bit if the queue is empty; returns true
 * then. After a true return the consumer must not touch the queue's owner:
 * the next push hands it to another thread. */
static inline bool tr__mpsc_mark_idle(tr__mpsc_ends q)
{
	uintptr_t expect = (uintptr_t)q.stub;

	if (*q.tail != q.stub)
		return false;
	return atomic_compare_exchange_strong_explicit(q.head, &expect,
						       expect | TR__MPSC_IDLE,
						       memory_order_acq_rel,
						       memory_order_relaxed);
}

#endif /* TR_MPSC_H */
