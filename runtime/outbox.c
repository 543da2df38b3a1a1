#include <time.h>

#include "internal.h"

/* From the address, not a->idx: that lives on the receiver's own line,
 * which its worker keeps writing (records are 128 B apart). */
static inline unsigned tr__outbox_slot(const tr__actor *a)
{
	return (unsigned)((uintptr_t)a / sizeof(tr__actor)) & (TR__OUT_SLOTS - 1);
}

/* Inside a read-side section. */
static void tr__outq_push(tr__worker *w, tr__outq *q)
{
	tr__actor *a = q->to;
	bool on = w->out.on;

	q->to = NULL;
	if (q->id && atomic_load_explicit(&a->ident, memory_order_acquire) == q->id) {
		if (tr__mpsc_push_chain(&a->mb_head, &q->first->link, &q->last->link))
			tr__schedule(w->sys, a);
		return;
	}
	/* The receiver stopped while its messages were held here. Answers
	 * this sends (to askers, watchers) go straight out, not into the
	 * outbox being walked. */
	w->out.on = false;
	for (tr_msg *m = q->first, *next; m; m = next) {
		next = m == q->last ? NULL : tr__mnext(m);
		tr__msg_discard_to(w->sys, &w->cache, q->id, TR_EDEAD, m);
	}
	w->out.on = on;
}

void tr__outbox_add(tr__worker *w, tr__actor *a, tr_msg *m)
{
	tr__outbox *o = &w->out;
	unsigned slot = tr__outbox_slot(a);
	tr__outq *q = &o->q[slot];

	if (q->to == a) {
		tr__mset_next(q->last, m);
		q->last = m;
		if (++q->n == TR__OUT_CHAIN)
			tr__outq_push(w, q);
		return;
	}
	if (q->to)
		tr__outq_push(w, q); /* another receiver had the slot */
	if (o->nused == TR__OUT_USED) {
		/* every chain started since the last flush: push them now */
		for (unsigned i = 0; i < o->nused; i++)
			if (o->q[o->used[i]].to)
				tr__outq_push(w, &o->q[o->used[i]]);
		o->nused = 0;
	}
	if (o->nused == 0) /* odd: something is held (shutdown reads it) */
		atomic_store_explicit(&o->gen, atomic_load_explicit(&o->gen, memory_order_relaxed) | 1u,
				      memory_order_relaxed);
	q->to = a;
	q->id = atomic_load_explicit(&a->ident, memory_order_relaxed);
	q->first = q->last = m;
	q->n = 1;
	o->used[o->nused++] = (uint16_t)slot;
}

void tr__outbox_push_to(tr__worker *w, tr__actor *a)
{
	tr__outq *q = &w->out.q[tr__outbox_slot(a)];

	if (q->to == a)
		tr__outq_push(w, q);
}

void tr__outbox_flush(tr__worker *w)
{
	tr__outbox *o = &w->out;
	uint32_t g;

	if (!o->nused)
		return;
	tr__rcu_read_lock();
	for (unsigned i = 0; i < o->nused; i++) {
		tr__outq *q = &o->q[o->used[i]];
		if (q->to)
			tr__outq_push(w, q);
	}
	tr__rcu_read_unlock();
	o->nused = 0;
	/* even again; release: a waiter that sees it sees the pushes */
	g = atomic_load_explicit(&o->gen, memory_order_relaxed);
	atomic_store_explicit(&o->gen, g + 1, memory_order_release);
}

void tr__outbox_wait(tr__worker *w)
{
	uint32_t g = atomic_load_explicit(&w->out.gen, memory_order_acquire);
	struct timespec ts = {0, 20000};

	if (!(g & 1u))
		return;
	while (atomic_load_explicit(&w->out.gen, memory_order_acquire) == g)
		nanosleep(&ts, NULL);
}
