#include "msgpool.h"

#include <stdlib.h>

#include "troupe/error.h"

int tr__msgpool_init(tr__msgpool *p)
{
	for (unsigned i = 0; i < TR__NCLASS; i++)
		atomic_init(&p->depot[i].chains, NULL);
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

/* Pushes one chain (head carries its length in `type`). Lock-free. */
static void tr__depot_push(tr__msgpool *p, unsigned cls, tr_msg *chain)
{
	_Atomic(tr_msg *) *top = &p->depot[cls].chains;
	tr_msg *old = atomic_load_explicit(top, memory_order_relaxed);

	do
		chain->u.p.ptr = old;
	while (!atomic_compare_exchange_weak_explicit(top, &old, chain, memory_order_release,
						      memory_order_relaxed));
}

/* Carves a new slab into one chain. Blocking (slab lock); NULL on ENOMEM. */
static tr_msg *tr__slab_new(tr__msgpool *p, unsigned cls)
{
	size_t bsize = (size_t)64 << cls;
	unsigned char *s = aligned_alloc(64, TR__SLAB_BYTES);
	tr_msg *first = NULL;
	uint32_t n = 0;

	if (!s)
		return NULL;
	/* the first block's room holds the slab list link */
	for (size_t off = TR__SLAB_BYTES - bsize; off >= bsize; off -= bsize) {
		tr_msg *m = (tr_msg *)(s + off);
		tr__mset_next(m, first);
		first = m;
		n++;
	}
	first->type = n;
	pthread_mutex_lock(&p->slab_mu);
	*(void **)s = p->slabs;
	p->slabs = s;
	pthread_mutex_unlock(&p->slab_mu);
	return first;
}

tr_msg *tr__mcache_refill(tr__msgpool *p, tr__mclass *k, unsigned cls)
{
	tr_msg *c;

	if (k->spill) {
		k->free = k->spill;
		k->nfree = k->nspill;
		k->spill = NULL;
		k->nspill = 0;
		return k->free;
	}
	if (!k->chains)
		k->chains = atomic_exchange_explicit(&p->depot[cls].chains, NULL,
						     memory_order_acquire);
	c = k->chains;
	if (c)
		k->chains = c->u.p.ptr;
	else if (!(c = tr__slab_new(p, cls)))
		return NULL;
	k->free = c;
	k->nfree = c->type;
	return c;
}

void tr__mcache_spill(tr__msgpool *p, tr__mclass *k, unsigned cls)
{
	k->spill->type = k->nspill;
	tr__depot_push(p, cls, k->spill);
	k->spill = NULL;
	k->nspill = 0;
}

void tr__mcache_flush(tr__msgpool *p, tr__mcache *mc)
{
	for (unsigned cls = 0; cls < TR__NCLASS; cls++) {
		tr__mclass *k = &mc->c[cls];

		if (k->spill)
			tr__mcache_spill(p, k, cls);
		if (k->free) {
			k->free->type = k->nfree;
			tr__depot_push(p, cls, k->free);
		}
		while (k->chains) {
			tr_msg *c = k->chains;
			k->chains = c->u.p.ptr;
			tr__depot_push(p, cls, c);
		}
		k->free = NULL;
		k->nfree = 0;
	}
}
