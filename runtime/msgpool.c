#include "msgpool.h"

#include <stdlib.h>

#include "troupe/error.h"

_Static_assert(sizeof(tr__mag) == 2048, "a magazine fills 2 KiB");

int tr__msgpool_init(tr__msgpool *p)
{
	for (unsigned i = 0; i < TR__NCLASS; i++)
		atomic_init(&p->depot[i].full, NULL);
	atomic_init(&p->empty, NULL);
	p->slabs = NULL;
	return pthread_mutex_init(&p->slab_mu, NULL) ? TR_ENOMEM : TR_OK;
}

void tr__msgpool_fini(tr__msgpool *p)
{
	void *s = p->slabs;

	while (s) {
		void *next = *(void **)s;
		free(s);
		s = next;
	}
	p->slabs = NULL;
	pthread_mutex_destroy(&p->slab_mu);
}

/* ------------------------------------------------------------- depots */

/* Pushes one magazine. Lock-free. */
static void tr__depot_push(_Atomic(tr__mag *) *top, tr__mag *g)
{
	tr__mag *old = atomic_load_explicit(top, memory_order_relaxed);

	do
		g->next = old;
	while (!atomic_compare_exchange_weak_explicit(top, &old, g, memory_order_release,
						      memory_order_relaxed));
}

/* Takes every magazine at once (so no ABA). Wait-free. */
static tr__mag *tr__depot_take_all(_Atomic(tr__mag *) *top)
{
	if (!atomic_load_explicit(top, memory_order_relaxed))
		return NULL;
	return atomic_exchange_explicit(top, NULL, memory_order_acquire);
}

/* -------------------------------------------------------------- slabs */

/* A 64 KiB slab whose first 64 bytes hold the slab list link. Blocking
 * (slab lock); NULL on ENOMEM. */
static unsigned char *tr__slab_new(tr__msgpool *p)
{
	unsigned char *s = aligned_alloc(64, TR__SLAB_BYTES);

	if (!s)
		return NULL;
	pthread_mutex_lock(&p->slab_mu);
	*(void **)s = p->slabs;
	p->slabs = s;
	pthread_mutex_unlock(&p->slab_mu);
	return s;
}

/* An empty magazine: the cache's own, the depot's, or a new slab of them.
 * NULL on ENOMEM. */
static tr__mag *tr__mag_empty(tr__msgpool *p, tr__mcache *mc)
{
	tr__mag *g;
	unsigned char *s;

	if (!mc->empty)
		mc->empty = tr__depot_take_all(&p->empty);
	if (!mc->empty) {
		if (!(s = tr__slab_new(p)))
			return NULL;
		for (size_t off = TR__SLAB_BYTES - sizeof(tr__mag); off >= sizeof(tr__mag);
		     off -= sizeof(tr__mag)) {
			g = (tr__mag *)(s + off);
			g->next = mc->empty;
			mc->empty = g;
		}
	}
	g = mc->empty;
	mc->empty = g->next;
	g->n = 0;
	return g;
}

/* Carves a new slab of class `cls` blocks into full magazines, the first
 * returned, the others on the cache's full list. NULL on ENOMEM. */
static tr__mag *tr__mag_carve(tr__msgpool *p, tr__mcache *mc, unsigned cls)
{
	size_t bsize = (size_t)64 << cls;
	unsigned char *s = tr__slab_new(p);
	tr__mag *g = NULL;

	if (!s)
		return NULL;
	/* the first block's room holds the slab list link */
	for (size_t off = bsize; off < TR__SLAB_BYTES; off += bsize) {
		if (!g || g->n == TR__MAG_CAP) {
			tr__mag *e = tr__mag_empty(p, mc);
			if (!e)
				break; /* out of memory: the rest of the slab stays unused */
			if (g) {
				g->next = mc->c[cls].full;
				mc->c[cls].full = g;
			}
			g = e;
		}
		g->v[g->n++] = (tr_msg *)(s + off);
	}
	return g;
}

/* ----------------------------------------------------------- the cache */

tr_msg *tr__mcache_alloc_slow(tr__msgpool *p, tr__mcache *mc, unsigned cls)
{
	tr__mclass *k = &mc->c[cls];
	tr__mag *g;

	if (k->prev && k->prev->n) {
		g = k->prev;
		k->prev = k->cur;
		k->cur = g;
		return tr__mcache_alloc(p, mc, cls);
	}
	if (!k->full)
		k->full = tr__depot_take_all(&p->depot[cls].full);
	if (k->full) {
		g = k->full;
		k->full = g->next;
	} else if (!(g = tr__mag_carve(p, mc, cls))) {
		return NULL;
	}
	/* cur is empty (or absent): it goes back for the threads that free */
	if (k->cur) {
		if (!k->prev)
			k->prev = k->cur;
		else
			tr__depot_push(&p->empty, k->cur);
	}
	k->cur = g;
	return tr__mcache_alloc(p, mc, cls);
}

void tr__mcache_free_slow(tr__msgpool *p, tr__mcache *mc, tr_msg *m)
{
	unsigned cls = tr__msg_class(m);
	tr__mclass *k = &mc->c[cls];
	tr__mag *g;

	if (k->prev && k->prev->n < TR__MAG_CAP) {
		g = k->prev;
		k->prev = k->cur;
		k->cur = g;
	} else {
		/* both full (or absent): the reserve goes to the depot for the
		 * threads that allocate, and an empty one takes its place */
		if (!(g = tr__mag_empty(p, mc)))
			return; /* out of memory: the block stays in its slab, unused */
		if (k->prev)
			tr__depot_push(&p->depot[cls].full, k->prev);
		k->prev = k->cur;
		k->cur = g;
	}
	k->cur->v[k->cur->n++] = m;
}

static void tr__mag_give(tr__msgpool *p, unsigned cls, tr__mag *g)
{
	if (g)
		tr__depot_push(g->n ? &p->depot[cls].full : &p->empty, g);
}

void tr__mcache_flush(tr__msgpool *p, tr__mcache *mc)
{
	for (unsigned cls = 0; cls < TR__NCLASS; cls++) {
		tr__mclass *k = &mc->c[cls];

		tr__mag_give(p, cls, k->cur);
		tr__mag_give(p, cls, k->prev);
		while (k->full) {
			tr__mag *g = k->full;
			k->full = g->next;
			tr__depot_push(&p->depot[cls].full, g);
		}
		k->cur = k->prev = NULL;
	}
	while (mc->empty) {
		tr__mag *g = mc->empty;
		mc->empty = g->next;
		tr__depot_push(&p->empty, g);
	}
}
