/*
 * Message memory: size-classed blocks (64, 128, 256 bytes) carved from slabs
 * the system owns, handed out through per-thread caches.
 *
 * Messages are allocated by senders and freed by receivers, usually on other
 * threads, so memory drifts from one cache to another. Blocks are not tied to
 * the cache that carved them: a free lands in the freeing thread's cache, and
 * a cache holding too much gives a whole chain of TR__MCHAIN blocks to the
 * system's depot, where a cache that runs dry takes every chain at once. The
 * depot is a Treiber stack of chains that is only ever pushed onto or emptied
 * whole (exchange with NULL), so it has no ABA problem and needs no lock.
 * Steady state costs no malloc and no atomic per message; slabs are allocated
 * under a lock only when the whole system needs more blocks, and freed when
 * the system is destroyed.
 *
 * While a block is free: link.next links blocks of a chain, u.p.ptr links
 * chains, and `type` holds the chain's length.
 */
#ifndef TR_MSGPOOL_H
#define TR_MSGPOOL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/message.h"

#define TR__NCLASS 3
#define TR__MCHAIN 256u
#define TR__MSG_HDR offsetof(tr_msg, u)
#define TR__SLAB_BYTES (64u * 1024u)

static inline unsigned tr__msg_class_for(size_t payload)
{
	size_t total = TR__MSG_HDR + payload;
	return total <= 64 ? 0 : total <= 128 ? 1 : 2;
}

static inline unsigned tr__msg_class(const tr_msg *m)
{
	return (m->flags >> TR__MSG_F_CLASS_SHIFT) & 3u;
}

typedef struct tr__msgpool {
	struct {
		alignas(64) _Atomic(tr_msg *) chains;
	} depot[TR__NCLASS];
	alignas(64) pthread_mutex_t slab_mu;
	void *slabs; /* singly linked through each slab's first word */
} tr__msgpool;

typedef struct tr__mclass {
	tr_msg *free; /* allocate from here */
	uint32_t nfree;
	uint32_t nspill;
	tr_msg *spill;  /* frees beyond TR__MCHAIN collect here, then go to the depot */
	tr_msg *chains; /* whole chains taken from the depot */
} tr__mclass;

typedef struct tr__mcache {
	tr__mclass c[TR__NCLASS];
} tr__mcache;

/* Not thread-safe (system creation / destruction). */
int tr__msgpool_init(tr__msgpool *p);
void tr__msgpool_fini(tr__msgpool *p);

/* Out-of-line slow paths of the inline functions below. */
tr_msg *tr__mcache_refill(tr__msgpool *p, tr__mclass *k, unsigned cls);
void tr__mcache_spill(tr__msgpool *p, tr__mclass *k, unsigned cls);

/* Gives everything a cache holds to the depot. Lock-free. */
void tr__mcache_flush(tr__msgpool *p, tr__mcache *mc);

static inline tr_msg *tr__mnext(tr_msg *m)
{
	return (tr_msg *)atomic_load_explicit(&m->link.next, memory_order_relaxed);
}

static inline void tr__mset_next(tr_msg *m, tr_msg *next)
{
	/* link is tr_msg's first member, so the cast keeps NULL as NULL */
	atomic_store_explicit(&m->link.next, (tr__link *)next, memory_order_relaxed);
}

/* Owner of the cache only. Wait-free except when the depot and the slabs are
 * empty (then it allocates a slab under a lock). NULL if out of memory. */
static inline tr_msg *tr__mcache_alloc(tr__msgpool *p, tr__mcache *mc, unsigned cls)
{
	tr__mclass *k = &mc->c[cls];
	tr_msg *m = k->free;

	if (__builtin_expect(m == NULL, 0)) {
		m = tr__mcache_refill(p, k, cls);
		if (!m)
			return NULL;
	}
	k->free = tr__mnext(m);
	k->nfree--;
	/* Free blocks usually come back from other cores (receivers free what
	 * senders allocate): start fetching the next one now, so a sender in a
	 * loop does not stall on it at its next allocation. */
	if (k->free)
		__builtin_prefetch(k->free, 1, 3);
	m->flags = (uint16_t)(cls << TR__MSG_F_CLASS_SHIFT);
	return m;
}

/* Owner of the cache only. Wait-free, lock-free when it spills a chain. */
static inline void tr__mcache_free(tr__msgpool *p, tr__mcache *mc, tr_msg *m)
{
	unsigned cls = tr__msg_class(m);
	tr__mclass *k = &mc->c[cls];

	if (k->nfree < TR__MCHAIN) {
		tr__mset_next(m, k->free);
		k->free = m;
		k->nfree++;
		return;
	}
	tr__mset_next(m, k->spill);
	k->spill = m;
	if (++k->nspill == TR__MCHAIN)
		tr__mcache_spill(p, k, cls);
}

#endif /* TR_MSGPOOL_H */
