/*
 * Message memory: size-classed blocks (64, 128, 256 bytes) carved from slabs
 * the system owns, handed out through per-thread caches of magazines.
 *
 * Messages are allocated by senders and freed by receivers, usually on other
 * threads, so memory drifts from one cache to another. A magazine is an
 * array of pointers to free blocks of one class. A thread allocates from and
 * frees into its current magazine (a stack), with a second one in reserve
 * so that alternating alloc and free at a boundary does not thrash. Full
 * magazines go to the system's depot, where a cache that runs dry takes all
 * of them at once; empty ones go to a second depot for the threads that
 * free. Each depot is a Treiber stack that is only ever pushed onto or
 * emptied whole (exchange with NULL), so it has no ABA problem and needs no
 * lock.
 *
 * Why arrays rather than free lists linked through the blocks: a block
 * usually comes back from another core, and a linked list must read each
 * block (a cache miss) to find the next one. A magazine names the next
 * blocks without touching them, so an allocation can prefetch a few ahead
 * and its writes to the block do not wait on a dependent load.
 *
 * Steady state costs no malloc and no atomic per message; slabs (of blocks,
 * and of magazines) are allocated under a lock only when the whole system
 * needs more, and freed when the system is destroyed, so a cache dropped
 * with its system leaks nothing.
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
#define TR__MSG_HDR offsetof(tr_msg, u)
#define TR__SLAB_BYTES (64u * 1024u)
#define TR__MAG_CAP 254u    /* blocks per magazine: a magazine is 2 KiB */
#define TR__MAG_PREFETCH 4u /* allocations ahead whose block is prefetched */

static inline unsigned tr__msg_class_for(size_t payload)
{
	size_t total = TR__MSG_HDR + payload;
	return total <= 64 ? 0 : total <= 128 ? 1 : 2;
}

static inline unsigned tr__msg_class(const tr_msg *m)
{
	return (m->flags >> TR__MSG_F_CLASS_SHIFT) & 3u;
}

typedef struct tr__mag {
	struct tr__mag *next; /* in a depot or a cache's list */
	uint32_t n;           /* blocks in v[0 .. n-1] */
	tr_msg *v[TR__MAG_CAP];
} tr__mag;

typedef struct tr__msgpool {
	struct {
		alignas(64) _Atomic(tr__mag *) full;
	} depot[TR__NCLASS];
	alignas(64) _Atomic(tr__mag *) empty;
	alignas(64) pthread_mutex_t slab_mu;
	void *slabs; /* every slab, singly linked through its first word */
} tr__msgpool;

typedef struct tr__mclass {
	tr__mag *cur;  /* allocate from and free into */
	tr__mag *prev; /* the reserve */
	tr__mag *full; /* full magazines taken from the depot */
} tr__mclass;

typedef struct tr__mcache {
	tr__mclass c[TR__NCLASS];
	tr__mag *empty; /* empty magazines taken from the depot */
} tr__mcache;

/* Not thread-safe (system creation / destruction). */
int tr__msgpool_init(tr__msgpool *p);
void tr__msgpool_fini(tr__msgpool *p);

/* Out-of-line slow paths of the inline functions below. */
tr_msg *tr__mcache_alloc_slow(tr__msgpool *p, tr__mcache *mc, unsigned cls);
void tr__mcache_free_slow(tr__msgpool *p, tr__mcache *mc, tr_msg *m);

/* Gives every magazine a cache holds to the depots. Lock-free. */
void tr__mcache_flush(tr__msgpool *p, tr__mcache *mc);

/* Owner of the cache only. Wait-free except when the depot and the slabs are
 * empty (then it allocates a slab under a lock). NULL if out of memory. */
static inline tr_msg *tr__mcache_alloc(tr__msgpool *p, tr__mcache *mc, unsigned cls)
{
	tr__mag *g = mc->c[cls].cur;
	tr_msg *m;

	if (__builtin_expect(!g || g->n == 0, 0))
		return tr__mcache_alloc_slow(p, mc, cls);
	m = g->v[--g->n];
	/* Free blocks usually come back from other cores: start taking the
	 * line of a block a few allocations ahead, so a sender in a loop
	 * finds it here by then. */
	if (g->n >= TR__MAG_PREFETCH)
		__builtin_prefetch(g->v[g->n - TR__MAG_PREFETCH], 1, 3);
	m->flags = (uint16_t)(cls << TR__MSG_F_CLASS_SHIFT);
	return m;
}

/* Owner of the cache only. Wait-free; lock-free when it trades magazines
 * with the depots, blocking only to carve a new slab of magazines. */
static inline void tr__mcache_free(tr__msgpool *p, tr__mcache *mc, tr_msg *m)
{
	tr__mag *g = mc->c[tr__msg_class(m)].cur;

	if (__builtin_expect(!g || g->n == TR__MAG_CAP, 0)) {
		tr__mcache_free_slow(p, mc, m);
		return;
	}
	g->v[g->n++] = m;
}

#endif /* TR_MSGPOOL_H */
