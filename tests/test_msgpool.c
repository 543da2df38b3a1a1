/*
 * Message memory (runtime/msgpool.c): size classes, reuse without new slabs
 * in steady state, magazines moving between caches through the depots, and
 * concurrent producer/consumer threads that never get the same block twice.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "msgpool.h"

static unsigned slab_count(tr__msgpool *p)
{
	unsigned n = 0;
	for (void *s = p->slabs; s; s = *(void **)s)
		n++;
	return n;
}

Test(msgpool, classes_cover_the_inline_payload_sizes)
{
	cr_assert_eq(tr__msg_class_for(0), 0);
	cr_assert_eq(tr__msg_class_for(64 - TR__MSG_HDR), 0);
	cr_assert_eq(tr__msg_class_for(64 - TR__MSG_HDR + 1), 1);
	cr_assert_eq(tr__msg_class_for(128 - TR__MSG_HDR), 1);
	cr_assert_eq(tr__msg_class_for(128 - TR__MSG_HDR + 1), 2);
	cr_assert_eq(tr__msg_class_for(TR_MSG_INLINE_MAX), 2);
}

Test(msgpool, blocks_are_distinct_sized_and_reused)
{
	tr__msgpool p;
	tr__mcache c;
	tr_msg *m[3000];

	cr_assert_eq(tr__msgpool_init(&p), 0);
	memset(&c, 0, sizeof(c));
	for (unsigned cls = 0; cls < TR__NCLASS; cls++) {
		size_t size = (size_t)64 << cls;
		for (int i = 0; i < 3000; i++) {
			m[i] = tr__mcache_alloc(&p, &c, cls);
			cr_assert_not_null(m[i]);
			cr_assert_eq(tr__msg_class(m[i]), cls);
			cr_assert_eq((uintptr_t)m[i] % 64, 0, "blocks are cache-line aligned");
			memset(m[i], 0xab, size); /* ASan: the whole class size is ours */
			m[i]->flags = (uint16_t)(cls << TR__MSG_F_CLASS_SHIFT);
		}
		for (int i = 0; i < 3000; i++)
			tr__mcache_free(&p, &c, m[i]);
	}
	unsigned slabs = slab_count(&p);
	for (int round = 0; round < 50; round++)
		for (unsigned cls = 0; cls < TR__NCLASS; cls++) {
			for (int i = 0; i < 3000; i++)
				m[i] = tr__mcache_alloc(&p, &c, cls);
			for (int i = 0; i < 3000; i++)
				tr__mcache_free(&p, &c, m[i]);
		}
	cr_assert_eq(slab_count(&p), slabs, "steady state allocates no new slab");
	tr__msgpool_fini(&p);
}

/* One thread allocates, another frees, as a sender and a receiver do: the
 * freeing side's surplus must reach the allocating side through the depot. */
enum { N = 2000000, INFLIGHT = 1024 };

typedef struct flow {
	tr__msgpool p;
	_Atomic(tr_msg *) slot[INFLIGHT];
	_Atomic int stop;
} flow;

static void *receiver(void *arg)
{
	flow *f = arg;
	tr__mcache c;
	unsigned got = 0;

	memset(&c, 0, sizeof(c));
	while (got < N) {
		for (unsigned i = 0; i < INFLIGHT; i++) {
			tr_msg *m = atomic_exchange(&f->slot[i], NULL);
			if (!m)
				continue;
			cr_assert_eq(m->type, 0x5eed, "a block was handed out twice");
			m->type = 0;
			tr__mcache_free(&f->p, &c, m);
			got++;
		}
	}
	tr__mcache_flush(&f->p, &c);
	return NULL;
}

Test(msgpool, cross_thread_flow_recycles_through_the_depot, .timeout = 120)
{
	static flow f;
	tr__mcache c;
	pthread_t t;
	unsigned sent = 0, i = 0;

	cr_assert_eq(tr__msgpool_init(&f.p), 0);
	memset(&c, 0, sizeof(c));
	pthread_create(&t, NULL, receiver, &f);
	while (sent < N) {
		if (!atomic_load(&f.slot[i])) {
			tr_msg *m = tr__mcache_alloc(&f.p, &c, 0);
			cr_assert_not_null(m);
			m->type = 0x5eed;
			atomic_store(&f.slot[i], m);
			sent++;
		}
		i = (i + 1) % INFLIGHT;
	}
	pthread_join(t, NULL);
	/* N blocks went through, at most INFLIGHT in flight plus the caches:
	 * a handful of 64 KiB slabs, not N/1023 */
	cr_assert_lt(slab_count(&f.p), 16u, "memory is recycled, got %u slabs", slab_count(&f.p));
	tr__msgpool_fini(&f.p);
}
