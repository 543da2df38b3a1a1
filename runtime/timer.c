/*
 * The timer service: one per system, a min-heap of deadlines under a lock
 * and one thread that sleeps on a condition variable until the earliest
 * deadline (woken early only when a new timer becomes the earliest), so
 * armed timers cost no CPU while they wait. Arming and cancelling are the
 * cold paths the lock is for; request timeouts are coalesced per actor
 * (ask.c) so a request/reply loop does not arm a timer per request.
 *
 * A timer is a slot in type-stable chunks; its id carries the slot's
 * generation like an actor reference. The slot's state word decides every
 * race with one CAS: ARMED -> FIRED (the thread sent a one-shot message),
 * then FIRED or ARMED -> FREE (delivered, cancelled, or target gone). A
 * message a timer sent carries the timer id; when it comes up in the
 * mailbox the runtime checks the slot, so a cancelled tick is dropped even
 * if it was already queued. Heap entries of freed slots are skipped when
 * they surface (the generation no longer matches).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "internal.h"

#define TR__TCHUNK_BITS 10u
#define TR__TCHUNK (1u << TR__TCHUNK_BITS)
#define TR__TNCHUNKS (TR_ACTORS_MAX / TR__TCHUNK)

enum { TR__T_FREE = 0, TR__T_ARMED = 1, TR__T_FIRED = 2 };
enum { TR__TK_ACTOR = 0, TR__TK_FUTURE = 1 };

typedef struct tr__tslot {
	_Atomic uint64_t state;    /* generation << 2 | phase */
	_Atomic uint32_t inflight; /* periodic: a tick is queued, unhandled */
	uint32_t idx;
	uint64_t target;   /* actor reference, or future id */
	uint64_t period;   /* 0: one-shot */
	tr_msg *proto;     /* what to send (one-shot: itself; periodic: copies) */
	uint32_t next_free; /* index + 1 */
	uint8_t kind;
} tr__tslot;

typedef struct tr__tentry {
	uint64_t deadline;
	uint64_t id;
} tr__tentry;

struct tr__timers {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	tr__tentry *heap;
	size_t n, cap;
	size_t stale; /* entries of cancelled timers still in the heap */
	_Atomic(tr__tslot *) *chunks;
	uint32_t next_fresh;
	uint32_t free_head;
	bool stop, started;
	pthread_t thread;
	tr_system *sys;
};

static inline uint64_t tr__tstate(uint32_t gen, unsigned phase) { return ((uint64_t)gen << 2) | phase; }
static inline uint32_t tr__tgen(uint64_t state) { return (uint32_t)(state >> 2); }
static inline unsigned tr__tphase(uint64_t state) { return (unsigned)(state & 3u); }
static inline uint32_t tr__id_gen(uint64_t id) { return (uint32_t)(id >> 24); }

static tr__tslot *tr__tslot_at(struct tr__timers *t, uint32_t idx)
{
	tr__tslot *c = atomic_load_explicit(&t->chunks[idx >> TR__TCHUNK_BITS], memory_order_acquire);
	return c ? &c[idx & (TR__TCHUNK - 1)] : NULL;
}

int tr__timers_init(tr_system *sys)
{
	struct tr__timers *t = calloc(1, sizeof(*t));
	pthread_condattr_t ca;

	if (!t)
		return TR_ENOMEM;
	t->chunks = calloc(TR__TNCHUNKS, sizeof(*t->chunks));
	if (!t->chunks) {
		free(t);
		return TR_ENOMEM;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&t->mu, NULL);
	t->sys = sys;
	sys->timers = t;
	return TR_OK;
}

void tr__timers_free(tr_system *sys)
{
	struct tr__timers *t = sys->timers;

	if (!t)
		return;
	for (uint32_t c = 0; c < TR__TNCHUNKS; c++)
		free(atomic_load_explicit(&t->chunks[c], memory_order_relaxed));
	free(t->chunks);
	free(t->heap);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
	sys->timers = NULL;
}

/* ---------------------------------------------------- slots and the heap */

/* Caller holds mu. */
static tr__tslot *tr__tslot_alloc(struct tr__timers *t)
{
	tr__tslot *s;

	if (t->free_head) {
		s = tr__tslot_at(t, t->free_head - 1);
		t->free_head = s->next_free;
		return s;
	}
	if (t->next_fresh >= TR_ACTORS_MAX)
		return NULL;
	if (t->next_fresh % TR__TCHUNK == 0) {
		tr__tslot *c = calloc(TR__TCHUNK, sizeof(*c));
		if (!c)
			return NULL;
		for (uint32_t i = 0; i < TR__TCHUNK; i++) {
			c[i].idx = t->next_fresh + i;
			atomic_init(&c[i].state, tr__tstate(t->sys->gen_seed | 1u, TR__T_FREE));
		}
		atomic_store_explicit(&t->chunks[t->next_fresh / TR__TCHUNK], c, memory_order_release);
	}
	return tr__tslot_at(t, t->next_fresh++);
}

/* Caller holds mu and has moved the slot to FREE. */
static void tr__tslot_release(struct tr__timers *t, tr__tslot *s)
{
	s->next_free = t->free_head;
	t->free_head = s->idx + 1;
}

/* FIRED or ARMED -> FREE of generation `gen`; true for the one caller that
 * wins, who must then release the slot. */
static bool tr__tslot_retire(tr__tslot *s, uint32_t gen)
{
	uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);

	while (tr__tgen(st) == gen && tr__tphase(st) != TR__T_FREE)
		if (atomic_compare_exchange_weak_explicit(&s->state, &st,
							  tr__tstate(gen + 1 ? gen + 1 : 1, TR__T_FREE),
							  memory_order_acq_rel, memory_order_acquire))
			return true;
	return false;
}

static bool tr__heap_before(const tr__tentry *h, size_t i, size_t j)
{
	return h[i].deadline < h[j].deadline;
}

/* Caller holds mu. */
static int tr__theap_push(struct tr__timers *t, uint64_t deadline, uint64_t id)
{
	size_t i;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		tr__tentry *h = realloc(t->heap, cap * sizeof(*h));
		if (!h)
			return TR_ENOMEM;
		t->heap = h;
		t->cap = cap;
	}
	i = t->n++;
	t->heap[i] = (tr__tentry){deadline, id};
	while (i > 0 && tr__heap_before(t->heap, i, (i - 1) / 2)) {
		tr__tentry x = t->heap[i];
		t->heap[i] = t->heap[(i - 1) / 2];
		t->heap[(i - 1) / 2] = x;
		i = (i - 1) / 2;
	}
	if (i == 0) /* a new earliest deadline: the thread must re-sleep */
		pthread_cond_signal(&t->cv);
	return TR_OK;
}

/* Caller holds mu; heap not empty. */
static tr__tentry tr__theap_pop(struct tr__timers *t)
{
	tr__tentry top = t->heap[0];
	size_t i = 0;

	t->heap[0] = t->heap[--t->n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < t->n && tr__heap_before(t->heap, l, m))
			m = l;
		if (r < t->n && tr__heap_before(t->heap, r, m))
			m = r;
		if (m == i)
			break;
		tr__tentry x = t->heap[i];
		t->heap[i] = t->heap[m];
		t->heap[m] = x;
		i = m;
	}
	return top;
}

/* Drops the entries of timers that are no longer armed, once they are most
 * of the heap: cancelled timers would otherwise hold memory until their
 * deadlines. O(n), so amortised O(1) per cancel. Caller holds mu. */
static void tr__theap_compact(struct tr__timers *t)
{
	size_t j = 0;

	if (t->stale < 1024 || t->stale * 2 < t->n)
		return;
	for (size_t i = 0; i < t->n; i++) {
		tr__tslot *s = tr__tslot_at(t, tr__ref_idx(t->heap[i].id));
		if (atomic_load_explicit(&s->state, memory_order_relaxed) ==
		    tr__tstate(tr__id_gen(t->heap[i].id), TR__T_ARMED))
			t->heap[j++] = t->heap[i];
	}
	t->n = j;
	t->stale = 0;
	for (size_t i = t->n / 2; i-- > 0;) { /* heapify */
		size_t k = i;
		for (;;) {
			size_t l = 2 * k + 1, r = l + 1, m = k;
			if (l < t->n && tr__heap_before(t->heap, l, m))
				m = l;
			if (r < t->n && tr__heap_before(t->heap, r, m))
				m = r;
			if (m == k)
				break;
			tr__tentry x = t->heap[k];
			t->heap[k] = t->heap[m];
			t->heap[m] = x;
			k = m;
		}
	}
	pthread_cond_signal(&t->cv); /* the earliest deadline may have changed */
}

/* ------------------------------------------------------------------ arming */

static int tr__arm(tr_system *sys, uint8_t kind, uint64_t target, uint64_t delay_ns,
		   uint64_t period_ns, tr_msg *proto, tr_timer *out)
{
	struct tr__timers *t = sys->timers;
	tr__tslot *s;
	uint64_t id;
	uint32_t gen;
	int rc;

	pthread_mutex_lock(&t->mu);
	s = tr__tslot_alloc(t);
	if (!s) {
		pthread_mutex_unlock(&t->mu);
		return TR_ENOMEM;
	}
	gen = tr__tgen(atomic_load_explicit(&s->state, memory_order_relaxed));
	id = tr__ref_make(sys->slot, gen, s->idx);
	s->kind = kind;
	s->target = target;
	s->period = period_ns;
	s->proto = proto;
	if (proto)
		proto->corr = id;
	atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
	atomic_store_explicit(&s->state, tr__tstate(gen, TR__T_ARMED), memory_order_release);
	rc = tr__theap_push(t, tr__deadline(tr__now_ns(), delay_ns), id);
	if (rc != TR_OK) {
		atomic_store_explicit(&s->state, tr__tstate(gen + 1, TR__T_FREE), memory_order_relaxed);
		tr__tslot_release(t, s);
	}
	pthread_mutex_unlock(&t->mu);
	if (rc == TR_OK && out)
		out->id = id;
	return rc;
}

static int tr__arm_msg(tr_ref to, uint64_t delay_ns, uint64_t period_ns, uint32_t type,
		       const void *data, size_t size, tr_timer *out)
{
	tr_system *sys;
	tr__actor *a;
	tr_msg *m;
	int rc;

	if (!to.id || (size && !data) || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	if (size > TR_MSG_INLINE_MAX)
		return TR_E2BIG;
	tr__rcu_read_lock();
	rc = tr__resolve(to.id, false, false, &sys, &a);
	if (rc == TR_OK) {
		m = tr__msg_alloc(sys, tr__msg_class_for(size));
		if (!m) {
			rc = TR_ENOMEM;
		} else {
			m->flags |= TR_MSG_F_TIMER;
			m->sender.id = tr__ctx.self;
			m->type = type;
			m->size = (uint16_t)size;
			if (size)
				memcpy(m->u.bytes, data, size);
			rc = tr__arm(sys, TR__TK_ACTOR, to.id, delay_ns, period_ns, m, out);
			if (rc != TR_OK)
				tr__msg_free(sys, m);
		}
	}
	tr__rcu_read_unlock();
	return rc;
}

int tr_send_after(tr_ref to, uint64_t delay_ns, uint32_t type, const void *data, size_t size,
		  tr_timer *out)
{
	return tr__arm_msg(to, delay_ns, 0, type, data, size, out);
}

int tr_send_every(tr_ref to, uint64_t period_ns, uint32_t type, const void *data, size_t size,
		  tr_timer *out)
{
	if (!period_ns)
		return TR_EINVAL;
	return tr__arm_msg(to, period_ns, period_ns, type, data, size, out);
}

int tr__timer_sys_after(tr_system *sys, uint64_t to, uint64_t delay_ns, uint32_t kind,
			tr_timer *out)
{
	tr_msg *m;
	int rc;

	tr__rcu_read_lock();
	m = tr__msg_alloc(sys, 0);
	if (!m) {
		tr__rcu_read_unlock();
		return TR_ENOMEM;
	}
	m->flags |= TR_MSG_F_SYSTEM | TR_MSG_F_TIMER;
	m->sender.id = 0;
	m->type = kind;
	m->size = 0;
	rc = tr__arm(sys, TR__TK_ACTOR, to, delay_ns, 0, m, out);
	if (rc != TR_OK)
		tr__msg_free(sys, m);
	tr__rcu_read_unlock();
	return rc;
}

int tr__timer_future_after(tr_system *sys, uint64_t fid, uint64_t delay_ns, tr_timer *out)
{
	return tr__arm(sys, TR__TK_FUTURE, fid, delay_ns, 0, NULL, out);
}

/* -------------------------------------------------------------- cancelling */

int tr_timer_cancel(tr_timer tm)
{
	struct tr__timers *t;
	tr_system *sys;
	tr__tslot *s;
	uint64_t st;
	int rc = TR_EDEAD;

	if (!tm.id)
		return TR_EDEAD;
	tr__rcu_read_lock();
	sys = tr__system_lookup(tr__ref_sys(tm.id));
	t = sys ? sys->timers : NULL;
	s = t ? tr__tslot_at(t, tr__ref_idx(tm.id)) : NULL;
	if (s) {
		st = atomic_load_explicit(&s->state, memory_order_acquire);
		if (tr__tgen(st) == tr__id_gen(tm.id) && tr__tslot_retire(s, tr__id_gen(tm.id))) {
			/* a timer dies with its target: if the target is gone
			 * there was nothing left to cancel (the slot is freed
			 * all the same) */
			bool live = s->kind != TR__TK_ACTOR || tr__ref_alive(sys, s->target) ||
				    tr__tphase(st) == TR__T_FIRED;
			pthread_mutex_lock(&t->mu);
			/* ARMED: the message was never sent, it is ours to free;
			 * FIRED: it is in a mailbox and will be dropped there */
			if (tr__tphase(st) == TR__T_ARMED && s->proto) {
				tr__msg_free(sys, s->proto);
			}
			s->proto = NULL;
			tr__tslot_release(t, s);
			if (tr__tphase(st) == TR__T_ARMED) {
				t->stale++;
				tr__theap_compact(t);
			}
			pthread_mutex_unlock(&t->mu);
			rc = live ? TR_OK : TR_EDEAD;
		}
	}
	tr__rcu_read_unlock();
	return rc;
}

/* ---------------------------------------------------------------- delivery */

bool tr__timer_on_deliver(tr_system *sys, tr_msg *m)
{
	struct tr__timers *t = sys->timers;
	tr__tslot *s = tr__tslot_at(t, tr__ref_idx(m->corr));
	uint32_t gen = tr__id_gen(m->corr);
	uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);

	if (tr__tgen(st) != gen)
		return false;
	if (tr__tphase(st) == TR__T_ARMED) { /* periodic: allow the next tick */
		atomic_store_explicit(&s->inflight, 0, memory_order_release);
		return true;
	}
	if (tr__tphase(st) == TR__T_FIRED && tr__tslot_retire(s, gen)) {
		pthread_mutex_lock(&t->mu);
		tr__tslot_release(t, s);
		pthread_mutex_unlock(&t->mu);
		return true;
	}
	return false;
}

/* Pushes a timer's message into its target; false if the target is gone
 * (or the system no longer runs). Inside a read-side section. */
static bool tr__timer_push(tr_system *sys, uint64_t target, tr_msg *m)
{
	tr_system *s2;
	tr__actor *a;

	if (tr__resolve(target, false, false, &s2, &a) != TR_OK)
		return false;
	if (tr__mpsc_push(&a->mb_head, &m->link))
		tr__schedule(sys, a);
	tr__count(sys, TR__C_TIMERS_FIRED, 1);
	return true;
}

/* One due entry. Called and returns with mu held. */
static void tr__timer_fire(struct tr__timers *t, tr__tentry e, uint64_t now)
{
	tr_system *sys = t->sys;
	tr__tslot *s = tr__tslot_at(t, tr__ref_idx(e.id));
	uint32_t gen = tr__id_gen(e.id);
	uint64_t armed = tr__tstate(gen, TR__T_ARMED);
	/* read under mu: once it is dropped, a cancel may free and reuse s */
	uint64_t target = s->target;
	uint8_t kind = s->kind;
	tr_msg *m = NULL;
	bool ok = false;

	if (atomic_load_explicit(&s->state, memory_order_acquire) != armed)
		return; /* cancelled or reused: a stale heap entry */
	if (s->period) {
		uint64_t next = tr__deadline(e.deadline, s->period);
		if (next <= now) /* fell behind: skip to the next future tick */
			next = now + s->period - (now - e.deadline) % s->period;
		(void)tr__theap_push(t, next, e.id);
		if (atomic_exchange_explicit(&s->inflight, 1, memory_order_acq_rel))
			return; /* the last tick is still queued: skip this one */
		tr__rcu_read_lock();
		m = tr__msg_alloc(sys, tr__msg_class(s->proto));
		if (m) {
			uint16_t cls_flags = m->flags;
			memcpy(m, s->proto, TR__MSG_HDR + s->proto->size);
			m->flags = cls_flags | (s->proto->flags & ~(3u << TR__MSG_F_CLASS_SHIFT));
		}
		tr__rcu_read_unlock();
		if (!m) {
			atomic_store_explicit(&s->inflight, 0, memory_order_relaxed);
			return;
		}
	} else {
		uint64_t exp = armed;
		if (!atomic_compare_exchange_strong_explicit(&s->state, &exp,
							     tr__tstate(gen, TR__T_FIRED),
							     memory_order_acq_rel,
							     memory_order_acquire))
			return; /* cancelled just now */
		m = s->proto;
		s->proto = NULL;
	}
	pthread_mutex_unlock(&t->mu);
	tr__rcu_read_lock();
	if (kind == TR__TK_FUTURE) /* the future's completion ends the timer */
		(void)tr__future_complete(target, TR_ETIMEDOUT, NULL);
	else
		ok = tr__timer_push(sys, target, m);
	if (!ok && m)
		tr__msg_free(sys, m);
	tr__rcu_read_unlock();
	pthread_mutex_lock(&t->mu);
	/* a one-shot that did not reach a mailbox, or a periodic whose target
	 * is gone, ends here */
	if (!ok && tr__tslot_retire(s, gen)) {
		if (s->proto) {
			tr__msg_free(sys, s->proto);
			s->proto = NULL;
		}
		tr__tslot_release(t, s);
	}
}

static void *tr__timer_main(void *arg)
{
	struct tr__timers *t = arg;

	tr__rcu_register_slow();
	/* Linux lets a timed wait oversleep by the thread's timer slack
	 * (50 us by default); timers should fire at their deadline. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	pthread_mutex_lock(&t->mu);
	while (!t->stop) {
		uint64_t now;

		if (!t->n) {
			pthread_cond_wait(&t->cv, &t->mu);
			continue;
		}
		now = tr__now_ns();
		if (t->heap[0].deadline == UINT64_MAX) { /* only "never" is left */
			pthread_cond_wait(&t->cv, &t->mu);
			continue;
		}
		if (t->heap[0].deadline > now) {
			struct timespec ts = {(time_t)(t->heap[0].deadline / 1000000000u),
					      (long)(t->heap[0].deadline % 1000000000u)};
			pthread_cond_timedwait(&t->cv, &t->mu, &ts);
			continue;
		}
		tr__timer_fire(t, tr__theap_pop(t), now);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

int tr__timers_start(tr_system *sys)
{
	struct tr__timers *t = sys->timers;

	if (pthread_create(&t->thread, NULL, tr__timer_main, t) != 0)
		return TR_ENOMEM;
	t->started = true;
	return TR_OK;
}

/* Stops the thread; futures still waiting on a timeout complete with
 * TR_ESHUTDOWN so no waiter hangs on a system that is gone. */
void tr__timers_stop(tr_system *sys)
{
	struct tr__timers *t = sys->timers;

	if (!t || !t->started)
		return;
	pthread_mutex_lock(&t->mu);
	t->stop = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	t->started = false;
	tr__rcu_read_lock();
	for (size_t i = 0; i < t->n; i++) {
		tr__tslot *s = tr__tslot_at(t, tr__ref_idx(t->heap[i].id));
		if (s->kind == TR__TK_FUTURE &&
		    atomic_load_explicit(&s->state, memory_order_acquire) ==
			    tr__tstate(tr__id_gen(t->heap[i].id), TR__T_ARMED))
			(void)tr__future_complete(s->target, TR_ESHUTDOWN, NULL);
	}
	tr__rcu_read_unlock();
}
