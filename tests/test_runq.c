/*
 * The per-worker run-queue ring (runtime/runq.h): FIFO for the owner, the
 * capacity bound, stealing half, and owner + thieves (single or half
 * steals) taking concurrently: every pushed item is taken exactly once.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "runq.h"

/* The ring stores opaque actor pointers; tests use distinct fake addresses. */
static struct tr__actor *item(uintptr_t i) { return (struct tr__actor *)((i + 1) * 64); }
static uintptr_t index_of(struct tr__actor *a) { return (uintptr_t)a / 64 - 1; }

static tr__ring *ring_new(void)
{
	tr__ring *r = aligned_alloc(64, sizeof(*r));
	cr_assert_not_null(r);
	atomic_init(&r->head, 0);
	atomic_init(&r->tail, 0);
	return r;
}

Test(runq, fifo_and_capacity)
{
	tr__ring *r = ring_new();

	cr_assert_null(tr__ring_pop(r));
	for (uintptr_t i = 0; i < TR__RING_CAP; i++)
		cr_assert(tr__ring_push(r, item(i)));
	cr_assert_not(tr__ring_push(r, item(999)), "a full ring refuses");
	cr_assert_eq(tr__ring_len(r), TR__RING_CAP);
	for (uintptr_t i = 0; i < TR__RING_CAP; i++)
		cr_assert_eq(tr__ring_pop(r), item(i));
	cr_assert_null(tr__ring_pop(r));
	cr_assert_eq(tr__ring_len(r), 0);
	free(r);
}

Test(runq, wraps_around_many_times)
{
	tr__ring *r = ring_new();

	for (uintptr_t i = 0; i < 10 * TR__RING_CAP; i++) {
		cr_assert(tr__ring_push(r, item(i)));
		cr_assert(tr__ring_push(r, item(i + 1000000)));
		cr_assert_eq(tr__ring_pop(r), item(i));
		cr_assert_eq(tr__ring_pop(r), item(i + 1000000));
	}
	free(r);
}

enum { THIEVES = 3, ITEMS = 400000 };

typedef struct steal_test {
	tr__ring *r;
	_Atomic unsigned char *taken; /* ITEMS counters */
	_Atomic int done;
	_Atomic unsigned total;
	bool half; /* thieves take half the ring at a time */
} steal_test;

static void take(steal_test *t, struct tr__actor *a)
{
	uintptr_t i = index_of(a);
	cr_assert_lt(i, ITEMS);
	atomic_fetch_add(&t->taken[i], 1);
	atomic_fetch_add(&t->total, 1);
}

static void *thief(void *arg)
{
	steal_test *t = arg;

	for (;;) {
		struct tr__actor *got[16];
		unsigned n = 0;

		if (t->half)
			n = tr__ring_steal(t->r, got, 16);
		else if ((got[0] = tr__ring_pop(t->r)))
			n = 1;
		for (unsigned i = 0; i < n; i++)
			take(t, got[i]);
		if (!n && atomic_load(&t->done) && tr__ring_len(t->r) == 0)
			break;
	}
	return NULL;
}

static void run_steal_test(bool half)
{
	steal_test t = {.r = ring_new(), .half = half};
	pthread_t th[THIEVES];

	t.taken = calloc(ITEMS, 1);
	cr_assert_not_null(t.taken);
	for (int i = 0; i < THIEVES; i++)
		pthread_create(&th[i], NULL, thief, &t);
	for (uintptr_t i = 0; i < ITEMS;) {
		if (tr__ring_push(t.r, item(i)))
			i++;
		if (i % 3 == 0) { /* the owner pops too, as a worker does */
			struct tr__actor *a = tr__ring_pop(t.r);
			if (a)
				take(&t, a);
		}
	}
	atomic_store(&t.done, 1);
	for (int i = 0; i < THIEVES; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(atomic_load(&t.total), ITEMS);
	for (unsigned i = 0; i < ITEMS; i++)
		cr_assert_eq(atomic_load(&t.taken[i]), 1, "item %u taken %u times", i,
			     (unsigned)atomic_load(&t.taken[i]));
	free(t.taken);
	free(t.r);
}

Test(runq, owner_and_thieves_take_each_item_exactly_once, .timeout = 120)
{
	run_steal_test(false);
}

Test(runq, owner_and_half_stealing_thieves_take_each_item_exactly_once, .timeout = 120)
{
	run_steal_test(true);
}

Test(runq, steal_takes_the_oldest_half)
{
	tr__ring *r = ring_new();
	struct tr__actor *got[64];

	cr_assert_eq(tr__ring_steal(r, got, 64), 0, "empty");
	for (uintptr_t i = 0; i < 9; i++)
		cr_assert(tr__ring_push(r, item(i)));
	cr_assert_eq(tr__ring_steal(r, got, 64), 5, "half of 9, rounded up");
	for (uintptr_t i = 0; i < 5; i++)
		cr_assert_eq(got[i], item(i));
	cr_assert_eq(tr__ring_steal(r, got, 1), 1, "capped by max");
	cr_assert_eq(got[0], item(5));
	cr_assert_eq(tr__ring_pop(r), item(6));
	cr_assert_eq(tr__ring_len(r), 2);
	free(r);
}
