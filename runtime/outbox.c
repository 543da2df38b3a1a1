#include <time.h>

#include "internal.h"

/* Links of a held chain: plain stores, published by the push's release. */
static inline tr_msg *tr__mnext(tr_msg *m)
{
	return (tr_msg *)atomic_load_explicit(&m->link.next, memory_order_relaxed);
}

static inline void tr__mset_next(tr_msg *m, tr_msg *next)
{
	/* link is tr_msg's first member, so the cast keeps NULL as NULL */
	atomic_store_explicit(&m->link.next, (tr__link *)next, memory_order_relaxed);
}

/* From the address, not a->idx: that lives on the receiver's own line,
 * which its worker keeps writing (records are 128 B apart). */
static inline unsigned tr__outbox_slot(const tr__actor *a)
{
	return (unsigned)((uintptr_t)a / sizeof(tr__actor)) & (TR__OUT_SLOTS - 1);
}

/* Pushes what the slot holds (the slot stays claimed). Inside a read-side
 * section. */
static void tr__outq_push(tr__worker *w, tr__outq *q)
{
	tr__actor *a = q->to;
	bool on = w->out.on;

	if (!q->n)
		return;
	q->n = 0;
	if (q->id && atomic_load_explicit(&a->ident, memory_order_acquire) == q->id) {
		if (tr__mpsc_push_chain(&a->mb_head, &q->first->link, &q->last->link))
			tr__schedule(w->sys, a);
		return;
	}
	/* The receiver stopped while its messages were held here. What the
	 * discards send (answers to askers and watchers) goes straight out,
	 * not into the outbox being walked. */
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
	uint64_t id = atomic_load_explicit(&a->ident, memory_order_relaxed);

	/* same record and same incarnation: a chain for one that died must
	 * not take messages for its successor */
	if (q->to == a && q->id == id) {
		if (q->n++ == 0) {
			q->first = m;
			if (!o->held) { /* odd: something is held (shutdown reads it) */
				o->held = true;
				atomic_store_explicit(&o->gen,
						      atomic_load_explicit(&o->gen, memory_order_relaxed) + 1,
						      memory_order_relaxed);
			}
		} else {
			tr__mset_next(q->last, m);
		}
		q->last = m;
		if (q->n == TR__OUT_CHAIN)
			tr__outq_push(w, q);
		return;
	}
	/* The first message to a receiver goes straight out, so a behaviour
	 * that sends one message (a reply, a forward) pays nothing for the
	 * outbox; the slot is claimed, and what follows to it is held. */
	if (q->to)
		tr__outq_push(w, q); /* another receiver had the slot */
	else
		o->used[o->nused++] = (uint16_t)slot; /* each slot listed once */
	q->to = a;
	q->id = id;
	q->n = 0;
	if (tr__mpsc_push(&a->mb_head, &m->link))
		tr__schedule(w->sys, a);
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
	bool held = o->held;

	/* with nothing held, a flush only frees the slots: no section */
	if (held)
		tr__rcu_read_lock();
	for (unsigned i = 0; i < o->nused; i++) {
		tr__outq *q = &o->q[o->used[i]];
		if (held)
			tr__outq_push(w, q);
		q->to = NULL;
	}
	o->nused = 0;
	if (!held)
		return;
	tr__rcu_read_unlock();
	o->held = false;
	/* even again; release: a waiter that sees it sees the pushes */
	atomic_store_explicit(&o->gen, atomic_load_explicit(&o->gen, memory_order_relaxed) + 1,
			      memory_order_release);
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
