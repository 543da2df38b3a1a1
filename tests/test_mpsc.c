/*
 * The intrusive MPSC queue with its IDLE bit (runtime/mpsc.h): FIFO, the
 * half-done push window, the idle protocol, and a many-producer hammer that
 * checks per-producer order, nothing lost, nothing duplicated, and that the
 * consumer is "scheduled" exactly once per idle period.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "mpsc.h"

typedef struct node {
	tr__link link; /* first, as in tr_msg */
	unsigned producer;
	unsigned seq;
} node;

typedef struct queue {
	_Atomic(uintptr_t) head;
	tr__link stub;
	tr__link *tail;
} queue;

static tr__mpsc_ends ends(queue *q) { return (tr__mpsc_ends){&q->head, &q->tail, &q->stub}; }

Test(mpsc, empty_queue_pops_null)
{
	queue q;
	tr__mpsc_init(ends(&q), false);
	cr_assert_null(tr__mpsc_pop(ends(&q)));
	cr_assert_null(tr__mpsc_pop(ends(&q)));
}

Test(mpsc, fifo_single_thread_and_reuse_after_drain)
{
	queue q;
	node n[10];

	tr__mpsc_init(ends(&q), false);
	for (int round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 10; i++) {
			n[i].seq = i;
			tr__mpsc_push(&q.head, &n[i].link);
		}
		for (unsigned i = 0; i < 10; i++) {
			node *got = (node *)tr__mpsc_pop(ends(&q));
			cr_assert_eq(got, &n[i], "round %d item %u", round, i);
		}
		cr_assert_null(tr__mpsc_pop(ends(&q)));
	}
}

Test(mpsc, half_done_push_is_retry_not_empty)
{
	queue q;
	node a, b;

	tr__mpsc_init(ends(&q), false);
	tr__mpsc_push(&q.head, &a.link);
	/* b's producer exchanged head but has not linked a->next yet */
	atomic_store(&b.link.next, NULL);
	atomic_store(&q.head, (uintptr_t)&b.link);
	cr_assert_eq(tr__mpsc_pop(ends(&q)), TR__MPSC_RETRY, "a is not handed out while b hangs off it unlinked");
	cr_assert_not(tr__mpsc_mark_idle(ends(&q)), "a queue with a half-done push is not idle");
	atomic_store(&a.link.next, &b.link); /* the producer finishes */
	cr_assert_eq(tr__mpsc_pop(ends(&q)), &a.link);
	cr_assert_eq(tr__mpsc_pop(ends(&q)), &b.link);
	cr_assert_null(tr__mpsc_pop(ends(&q)));
}

Test(mpsc, idle_bit_reports_the_waking_push_once)
{
	queue q;
	node a, b, c;

	tr__mpsc_init(ends(&q), true);
	cr_assert(tr__mpsc_push(&q.head, &a.link), "first push into an idle queue wakes");
	cr_assert_not(tr__mpsc_push(&q.head, &b.link), "second push does not");
	cr_assert_not(tr__mpsc_mark_idle(ends(&q)), "non-empty queue cannot go idle");
	cr_assert_eq(tr__mpsc_pop(ends(&q)), &a.link);
	cr_assert_eq(tr__mpsc_pop(ends(&q)), &b.link);
	cr_assert_null(tr__mpsc_pop(ends(&q)));
	cr_assert(tr__mpsc_mark_idle(ends(&q)), "empty queue goes idle");
	cr_assert(tr__mpsc_push(&q.head, &c.link), "and the next push wakes again");
	cr_assert_eq(tr__mpsc_pop(ends(&q)), &c.link);
}

/* ---- hammer: P producers, one consumer that only runs when "scheduled" ---- */

enum { P = 4 };

typedef struct hammer {
	queue q;
	unsigned per_producer;
	node *nodes; /* P * per_producer */
	_Atomic unsigned wakes;     /* pushes that found the queue idle */
	_Atomic unsigned scheduled; /* 1 while the consumer owns the queue */
	_Atomic unsigned double_schedules;
	_Atomic unsigned producers_done;
} hammer;

static void *producer(void *arg)
{
	void **a = arg;
	hammer *h = a[0];
	unsigned p = (unsigned)(uintptr_t)a[1];

	for (unsigned i = 0; i < h->per_producer; i++) {
		node *n = &h->nodes[p * h->per_producer + i];
		n->producer = p;
		n->seq = i;
		if (tr__mpsc_push(&h->q.head, &n->link)) {
			atomic_fetch_add(&h->wakes, 1);
			/* the consumer must not already be scheduled */
			if (atomic_exchange(&h->scheduled, 1) != 0)
				atomic_fetch_add(&h->double_schedules, 1);
		}
	}
	atomic_fetch_add(&h->producers_done, 1);
	return NULL;
}

Test(mpsc, hammer_fifo_per_producer_no_loss_no_dup_single_schedule, .timeout = 120)
{
	hammer h = {.per_producer = 200000};
	unsigned next[P] = {0}, received = 0, idles = 0;
	pthread_t t[P];
	void *args[P][2];

	h.nodes = calloc((size_t)P * h.per_producer, sizeof(node));
	cr_assert_not_null(h.nodes);
	tr__mpsc_init(ends(&h.q), true);
	for (unsigned p = 0; p < P; p++) {
		args[p][0] = &h;
		args[p][1] = (void *)(uintptr_t)p;
		pthread_create(&t[p], NULL, producer, args[p]);
	}
	while (received < P * h.per_producer) {
		tr__link *l;
		if (!atomic_load(&h.scheduled))
			continue; /* idle: wait for a producer to wake us */
		l = tr__mpsc_pop(ends(&h.q));
		if (l && l != TR__MPSC_RETRY) {
			node *n = (node *)l;
			cr_assert_lt(n->producer, P);
			cr_assert_eq(n->seq, next[n->producer], "producer %u: got %u, want %u",
				     n->producer, n->seq, next[n->producer]);
			next[n->producer]++;
			received++;
		} else if (!l) {
			/* going idle: clear our flag first, since a push may
			 * reschedule us the moment the bit is set */
			atomic_store(&h.scheduled, 0);
			if (tr__mpsc_mark_idle(ends(&h.q)))
				idles++;
			else
				atomic_store(&h.scheduled, 1);
		}
	}
	for (unsigned p = 0; p < P; p++)
		pthread_join(t[p], NULL);
	cr_assert_null(tr__mpsc_pop(ends(&h.q)), "nothing beyond what was pushed");
	for (unsigned p = 0; p < P; p++)
		cr_assert_eq(next[p], h.per_producer);
	cr_assert_eq(atomic_load(&h.double_schedules), 0, "a push woke an already scheduled consumer");
	cr_assert_eq(atomic_load(&h.wakes), idles + 1, "every idle period ended by exactly one wake");
	free(h.nodes);
}
