/*
 * Actors: spawn, send, stop, the run loop, and reclamation of dead actors.
 *
 * Safety of references: an actor record lives in type-stable memory (a chunk
 * of the system's table) and is reused only after an RCU grace period that
 * follows its death. A sender checks `ident` and pushes into the mailbox
 * inside one read-side section, so if it saw the actor alive, the record
 * cannot be reset under it; if the actor died in between, the message lands
 * in a dead mailbox that the reclaimer drains (and counts) after the grace
 * period. A stopped actor's mailbox is never marked idle again, so such late
 * pushes never schedule it.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

_Static_assert(sizeof(tr__actor) == 2 * TR__CACHELINE, "actor record must stay two cache lines");
_Static_assert(TR__MSG_HDR + TR_MSG_INLINE_MAX == 256, "largest class holds the inline maximum");

_Thread_local tr__tls tr__ctx;

/* ---------------------------------------------------------------- memory */

/* The calling thread's message cache for `sys`. Inside a read-side section:
 * switching a non-worker thread's cache to another system gives the old
 * system its blocks back if that system still exists. */
static tr__mcache *tr__cache_for(tr_system *sys)
{
	tr__worker *w = tr__my_worker(sys);
	tr__tls *c = &tr__ctx;

	if (w)
		return &w->cache;
	if (c->xuid != sys->uid) {
		if (c->xuid) {
			tr_system *old = tr__system_lookup(c->xslot);
			if (old && old->uid == c->xuid)
				tr__mcache_flush(&old->pool, &c->xcache);
		}
		memset(&c->xcache, 0, sizeof(c->xcache));
		c->xuid = sys->uid;
		c->xslot = sys->slot;
	}
	return &c->xcache;
}

tr_msg *tr__msg_alloc(tr_system *sys, unsigned cls)
{
	return tr__mcache_alloc(&sys->pool, tr__cache_for(sys), cls);
}

void tr__msg_free(tr_system *sys, tr_msg *m)
{
	tr__mcache_free(&sys->pool, tr__cache_for(sys), m);
}

static void tr__msg_release(tr_system *sys, tr__mcache *mc, tr_msg *m)
{
	if ((m->flags & TR_MSG_F_PTR) && m->u.p.ptr && m->u.p.dtor)
		m->u.p.dtor(m->u.p.ptr);
	tr__mcache_free(&sys->pool, mc, m);
}

/* Destroys a message that was accepted by actor `a` (stopped with
 * a->stop_reason) but will never be delivered. Timer messages were never
 * counted as sent; runtime messages are never counted; requests, monitors
 * and links still get their answer. */
void tr__msg_discard_to(tr_system *sys, tr__mcache *mc, uint64_t self, int reason, tr_msg *m)
{
	if (m->flags & TR_MSG_F_TIMER)
		(void)tr__timer_on_deliver(sys, m); /* frees a one-shot's timer */
	else if (!(m->flags & TR_MSG_F_SYSTEM)) {
		tr__count(sys, TR__C_UNDELIVERED, 1);
		tr__count(sys, TR__C_DEAD_LETTERS, 1);
	}
	if (m->flags & (TR_MSG_F_SYSTEM | TR_MSG_F_REQUEST))
		tr__ext_on_discard(sys, m, self, reason);
	tr__msg_release(sys, mc, m);
}

static void tr__msg_discard(tr_system *sys, tr__mcache *mc, tr__actor *a, tr_msg *m)
{
	tr__msg_discard_to(sys, mc, tr__actor_ref(sys, a), a->stop_reason, m);
}

/* Discards what is visible in a dead actor's mailbox; stops at a half-done
 * push, which the reclaimer finishes after the grace period. */
static void tr__mbox_discard(tr_system *sys, tr__mcache *mc, tr__actor *a)
{
	tr__link *l;

	while ((l = tr__mpsc_pop(tr__mbox(a))) != NULL && l != TR__MPSC_RETRY)
		tr__msg_discard(sys, mc, a, (tr_msg *)l);
}

/* ---------------------------------------------------------- actor slots */

/* Allocates and publishes a chunk of records. Caller holds table_mu. */
static int tr__chunk_new_locked(tr_system *sys, uint32_t c)
{
	/* Straight from mmap: 128 KiB is glibc's mmap threshold, where
	 * malloc would add a header page (3% per actor); mmap memory also
	 * comes zeroed and page-aligned. */
	tr__actor *chunk = mmap(NULL, TR__CHUNK_BYTES, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (chunk == MAP_FAILED)
		return TR_ENOMEM;
	/* records are set up when first handed out: a page of the chunk is
	 * touched (and resident) only once an actor lives on it */
	atomic_store_explicit(&sys->chunks[c], chunk, memory_order_release);
	return TR_OK;
}

static int tr__idx_take_locked(tr_system *sys, uint32_t *out)
{
	tr__actor *a;
	int rc;

	if (sys->free_head) {
		*out = sys->free_head - 1;
		sys->free_head = tr__actor_at(sys, *out)->u.free.next;
		return TR_OK;
	}
	if (sys->next_fresh >= TR_ACTORS_MAX)
		return TR_ELIMIT;
	if (sys->next_fresh % TR__CHUNK_SIZE == 0 &&
	    (rc = tr__chunk_new_locked(sys, sys->next_fresh / TR__CHUNK_SIZE)) != TR_OK)
		return rc;
	a = tr__actor_at(sys, sys->next_fresh);
	a->idx = sys->next_fresh;
	/* a per-system start makes a stale reference into a destroyed system
	 * unlikely to match an actor of its successor */
	a->gen = sys->gen_seed | 1u;
	tr__mpsc_init(tr__mbox(a), true);
	*out = sys->next_fresh++;
	return TR_OK;
}

/* A worker refills half its cache per lock; other threads take one. */
static int tr__idx_alloc(tr_system *sys, uint32_t *out)
{
	tr__worker *w = tr__my_worker(sys);
	int rc;

	if (w && w->nidx) {
		*out = w->idx_cache[--w->nidx];
		return TR_OK;
	}
	pthread_mutex_lock(&sys->table_mu);
	rc = tr__idx_take_locked(sys, out);
	while (rc == TR_OK && w && w->nidx < TR__IDX_CACHE / 2 &&
	       tr__idx_take_locked(sys, &w->idx_cache[w->nidx]) == TR_OK)
		w->nidx++;
	pthread_mutex_unlock(&sys->table_mu);
	return rc;
}

static void tr__idx_release(tr_system *sys, const uint32_t *idx, unsigned n)
{
	/* a free record's union is unused: it links the free list, so idle
	 * capacity costs no memory beyond the records themselves */
	pthread_mutex_lock(&sys->table_mu);
	for (unsigned i = 0; i < n; i++) {
		tr__actor_at(sys, idx[i])->u.free.next = sys->free_head;
		sys->free_head = idx[i] + 1;
	}
	pthread_mutex_unlock(&sys->table_mu);
}

/* After a grace period: nobody can push any more. Discards the rest of the
 * mailbox and readies the record for its next incarnation. */
static void tr__actor_reset(tr_system *sys, tr__mcache *mc, tr__actor *a)
{
	tr__mbox_discard(sys, mc, a);
	tr__mpsc_init(tr__mbox(a), true);
	atomic_store_explicit(&a->mb_count, 0, memory_order_relaxed);
	atomic_store_explicit(&a->killed, 0, memory_order_relaxed);
	a->flags = 0;
	if (++a->gen == 0)
		a->gen = 1;
}

static void tr__dead_batch_cb(struct rcu_head *head)
{
	tr__actor *a = caa_container_of(head, tr__actor, u.dead.rcu);
	tr_system *sys;
	tr__mcache mc;
	uint32_t idx[TR__DEAD_BATCH];
	unsigned n = 0;

	tr__rcu_cb_enter(head);
	sys = a->u.dead.sys;
	memset(&mc, 0, sizeof(mc));
	while (a) {
		tr__actor *next = a->u.dead.next;
		tr__actor_reset(sys, &mc, a);
		idx[n++] = a->idx;
		a = next;
	}
	tr__mcache_flush(&sys->pool, &mc);
	tr__idx_release(sys, idx, n);
	tr__rcu_cb_leave();
}

void tr__actor_flush_dead(tr__worker *w)
{
	tr__actor *first = w->dead;

	if (!first)
		return;
	first->u.dead.sys = w->sys;
	w->dead = NULL;
	w->ndead = 0;
	tr__rcu_call(&first->u.dead.rcu, tr__dead_batch_cb);
}

/* The actor's ident is already 0. Queues its record for reuse: batched
 * through call_rcu on a worker, synchronously elsewhere (rare paths). */
static void tr__actor_bury(tr_system *sys, tr__actor *a)
{
	tr__worker *w = tr__my_worker(sys);
	tr__mcache mc;

	if (w) {
		a->u.dead.next = w->dead;
		w->dead = a;
		if (++w->ndead >= TR__DEAD_BATCH)
			tr__actor_flush_dead(w);
		return;
	}
	tr__rcu_synchronize();
	memset(&mc, 0, sizeof(mc));
	tr__actor_reset(sys, &mc, a);
	tr__mcache_flush(&sys->pool, &mc);
	tr__idx_release(sys, &a->idx, 1);
}

/* ------------------------------------------------------------------ send */

uint64_t tr__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int tr__resolve(uint64_t id, bool user, bool any_state, tr_system **sys_out, tr__actor **a_out)
{
	tr_system *sys = tr__system_lookup(tr__ref_sys(id));
	tr__actor *a;
	int st;

	if (!sys)
		return TR_EDEAD;
	st = atomic_load_explicit(&sys->state, memory_order_acquire);
	if (st != TR__S_RUNNING && !any_state) {
		if (st == TR__S_CREATED)
			return TR_ENOTSTARTED;
		if (user)
			tr__count(sys, TR__C_DEAD_LETTERS, 1);
		return TR_ESHUTDOWN;
	}
	a = tr__actor_at(sys, tr__ref_idx(id));
	if (!a || atomic_load_explicit(&a->ident, memory_order_acquire) != id) {
		if (user)
			tr__count(sys, TR__C_DEAD_LETTERS, 1);
		return TR_EDEAD;
	}
	*sys_out = sys;
	*a_out = a;
	return TR_OK;
}

/* Sleeps until the mailbox count changes or `ns` pass. Called inside a
 * read-side section and returns outside it: a sleeper must not hold up
 * grace periods. The caller re-resolves everything afterwards. */
static void tr__wait_for_room(tr_system *sys, tr__actor *a, uint64_t ns)
{
	uint64_t uid = sys->uid;
	unsigned slot = sys->slot;
	uint32_t c;

	/* seq_cst pairs with the consumer's decrement-then-check-waiters */
	atomic_fetch_add_explicit(&sys->mb_waiters, 1, memory_order_seq_cst);
	c = atomic_load_explicit(&a->mb_count, memory_order_seq_cst);
	tr__rcu_read_unlock();
	/* the record is type-stable until its system is destroyed; a futex on
	 * a reused record only wakes early, and destroy wakes nobody here
	 * because shutdown already stopped every actor (waking its waiters) */
	if (c >= a->mb_capacity)
		tr__futex_wait(&a->mb_count, c, (int64_t)ns);
	tr__rcu_read_lock();
	sys = tr__system_lookup(slot);
	if (sys && sys->uid == uid)
		atomic_fetch_sub_explicit(&sys->mb_waiters, 1, memory_order_relaxed);
	tr__rcu_read_unlock();
}

int tr__post(tr_system *sys, tr__actor *a, uint16_t flags, uint32_t type, uint64_t corr,
	     const void *data, size_t size)
{
	tr_msg *m = tr__msg_alloc(sys, (flags & TR_MSG_F_PTR) ? 0 : tr__msg_class_for(size));
	tr__worker *w;

	if (!m)
		return TR_ENOMEM;
	m->flags |= flags;
	m->sender.id = tr__ctx.self;
	m->corr = corr;
	m->type = type;
	if (flags & TR_MSG_F_PTR) {
		m->size = 0;
		memcpy(&m->u.p, data, sizeof(m->u.p));
	} else {
		m->size = (uint16_t)size;
		if (size)
			memcpy(m->u.bytes, data, size);
	}
	w = tr__ctx.worker;
	if (w && w->out.on && w->sys == sys) {
		if (!(flags & TR_MSG_F_SYSTEM)) {
			tr__outbox_add(w, a, m);
			return TR_OK;
		}
		/* runtime requests take effect at once, behind what this
		 * worker holds for the same receiver */
		tr__outbox_push_to(w, a);
	}
	if (tr__mpsc_push(&a->mb_head, &m->link))
		tr__schedule(sys, a);
	return TR_OK;
}

int tr__send_msg(uint64_t id, uint16_t flags, uint64_t corr, uint32_t type, const void *data,
		 size_t size, void *ptr, tr_dtor dtor)
{
	uint64_t deadline = 0;
	tr_system *sys;
	tr__actor *a;
	bool bounded;
	int rc;

	for (;;) {
		tr__rcu_read_lock();
		rc = tr__resolve(id, true, false, &sys, &a);
		if (rc != TR_OK)
			break;
		bounded = a->mb_capacity && !(flags & TR_MSG_F_REPLY);
		if (bounded && !tr__try_admit(a)) {
			if (a->overflow == TR_OVERFLOW_WAIT && !tr__ctx.worker) {
				uint64_t now = tr__now_ns();
				if (!deadline)
					deadline = now + (uint64_t)a->overflow_wait_ms * 1000000u;
				if (now < deadline) {
					tr__wait_for_room(sys, a, deadline - now);
					continue;
				}
				rc = TR_ETIMEDOUT;
			} else {
				rc = TR_EFULL;
			}
			tr__count(sys, TR__C_REJECTED_FULL, 1);
			break;
		}
		if (flags & TR_MSG_F_PTR) {
			struct { void *ptr; tr_dtor dtor; } p = {ptr, dtor};
			rc = tr__post(sys, a, flags, type, corr, &p, 0);
		} else {
			rc = tr__post(sys, a, flags, type, corr, data, size);
		}
		if (rc != TR_OK) {
			if (bounded)
				atomic_fetch_sub_explicit(&a->mb_count, 1, memory_order_relaxed);
			break;
		}
		tr__count(sys, TR__C_SENT, 1);
		break;
	}
	tr__rcu_read_unlock();
	return rc;
}

int tr__send_sys(uint64_t to, uint32_t kind, uint64_t corr, const void *data, size_t size)
{
	tr_system *sys;
	tr__actor *a;
	int rc;

	tr__rcu_read_lock();
	rc = tr__resolve(to, false, true, &sys, &a);
	if (rc == TR_OK)
		rc = tr__post(sys, a, TR_MSG_F_SYSTEM, kind, corr, data, size);
	tr__rcu_read_unlock();
	return rc;
}

int tr_send(tr_ref to, uint32_t type, const void *data, size_t size)
{
	if (!to.id || (size && !data) || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	if (size > TR_MSG_INLINE_MAX)
		return TR_E2BIG;
	return tr__send_msg(to.id, 0, 0, type, data, size, NULL, NULL);
}

int tr_send_ptr(tr_ref to, uint32_t type, void **ptr_p, tr_dtor dtor)
{
	int rc;

	if (!to.id || !ptr_p || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	rc = tr__send_msg(to.id, TR_MSG_F_PTR, 0, type, NULL, 0, *ptr_p, dtor);
	if (rc == TR_OK)
		*ptr_p = NULL;
	return rc;
}

/* Runtime stop request: never bound, never counted. Inside a read-side
 * section, with `a` resolved by the caller. */
int tr__send_stop(tr_system *sys, tr__actor *a, int reason)
{
	return tr__post(sys, a, TR_MSG_F_SYSTEM, TR__SYS_STOP, 0, &reason, sizeof(reason));
}

/* Runtime requests (stop, kill) are accepted before start too, like
 * monitor and link: they take effect once the system runs. */
static int tr__resolve_request(uint64_t id, tr_system **sys, tr__actor **a)
{
	tr_system *s = tr__system_lookup(tr__ref_sys(id));

	if (s && atomic_load_explicit(&s->state, memory_order_acquire) >= TR__S_DRAINING)
		return TR_ESHUTDOWN;
	return tr__resolve(id, false, true, sys, a);
}

/* tr_stop and tr_kill: a runtime request; a kill also raises the flag that
 * makes the actor skip whatever is queued (the message only makes sure an
 * idle actor runs to notice it). */
static int tr__request(tr_ref ref, uint32_t kind, int reason)
{
	tr_system *sys;
	tr__actor *a;
	int rc;

	if (!ref.id)
		return TR_EINVAL;
	tr__rcu_read_lock();
	rc = tr__resolve_request(ref.id, &sys, &a);
	if (rc == TR_OK) {
		if (kind == TR__SYS_KILL)
			atomic_store_explicit(&a->killed, 1, memory_order_relaxed);
		rc = tr__post(sys, a, TR_MSG_F_SYSTEM, kind, 0, &reason, sizeof(reason));
	}
	tr__rcu_read_unlock();
	return rc;
}

int tr_stop(tr_ref ref) { return tr__request(ref, TR__SYS_STOP, TR_OK); }

int tr_kill(tr_ref ref) { return tr__request(ref, TR__SYS_KILL, TR_EKILLED); }

/* ----------------------------------------------------------------- spawn */

int tr_spawn(tr_system *sys, tr_behaviour behaviour, void *state, tr_ref *out)
{
	tr_actor_opts o = {.behaviour = behaviour, .state = state};
	return tr_spawn_opts(sys, &o, out);
}

int tr_spawn_opts(tr_system *sys, const tr_actor_opts *o, tr_ref *out)
{
	uint32_t cap, wait_ms, idx;
	tr_overflow overflow;
	tr__actor *a;
	uint64_t id;
	tr__tls saved;
	int rc;

	if (!sys || !o || !out || !o->behaviour || o->worker > sys->nworkers)
		return TR_EINVAL;
	if (o->mailbox_capacity == 0) {
		cap = sys->cfg.mailbox_capacity;
		overflow = sys->cfg.overflow;
		wait_ms = sys->cfg.overflow_wait_ms;
	} else {
		cap = o->mailbox_capacity == TR_MAILBOX_UNBOUNDED ? 0 : o->mailbox_capacity;
		overflow = o->overflow;
		wait_ms = o->overflow_wait_ms;
		if (cap > (1u << 31) ||
		    (overflow != TR_OVERFLOW_REJECT && overflow != TR_OVERFLOW_WAIT))
			return TR_EINVAL;
	}

	tr__rcu_read_lock();
	if (atomic_load_explicit(&sys->state, memory_order_acquire) >= TR__S_DRAINING) {
		tr__rcu_read_unlock();
		return TR_ESHUTDOWN;
	}
	rc = tr__idx_alloc(sys, &idx);
	if (rc != TR_OK) {
		tr__rcu_read_unlock();
		return rc;
	}
	a = tr__actor_at(sys, idx);
	a->u.live.behaviour = o->behaviour;
	a->u.live.state = o->state;
	a->u.live.cleanup = o->cleanup;
	a->mb_capacity = cap;
	a->overflow = (uint8_t)overflow;
	a->overflow_wait_ms = wait_ms;
	a->home = (uint16_t)o->worker;
	a->flags = 0;
	a->stop_reason = TR_OK;
	a->ext = NULL;
	/* An actor with an init hook starts "scheduled", so messages sent to it
	 * during init wait until init returned. */
	if (o->init)
		atomic_store_explicit(&a->mb_head, (uintptr_t)&a->mb_stub, memory_order_relaxed);
	id = tr__ref_make(sys->slot, a->gen, idx);
	atomic_store_explicit(&a->ident, id, memory_order_release);
	tr__count(sys, TR__C_SPAWNED, 1);
	tr__rcu_read_unlock();

	if (o->init) {
		saved = tr__ctx;
		tr__ctx.actor = a;
		tr__ctx.sys = sys;
		tr__ctx.self = id;
		rc = o->init(o->state);
		tr__ctx.actor = saved.actor;
		tr__ctx.sys = saved.sys;
		tr__ctx.self = saved.self;
		if (rc != TR_OK) {
			atomic_store_explicit(&a->ident, 0, memory_order_release);
			a->stop_reason = rc;
			if (a->ext)
				tr__ext_on_stop(sys, a, id, rc);
			tr__count(sys, TR__C_SPAWNED, -1);
			tr__actor_bury(sys, a);
			return rc;
		}
		/* anything sent during init, or a stop it requested, needs a run */
		if ((a->flags & TR__A_STOPPING) || !tr__mpsc_mark_idle(tr__mbox(a)))
			tr__schedule(sys, a);
	}
	*out = (tr_ref){id};
	return TR_OK;
}

/* ------------------------------------------------------------ stop & run */

static void tr__actor_stop(tr__worker *w, tr__actor *a, int reason)
{
	tr_system *sys = w->sys;
	tr_cleanup_fn cleanup = a->u.live.cleanup;
	void *state = a->u.live.state;

	a->stop_reason = reason;
	atomic_store_explicit(&a->ident, 0, memory_order_release);
	if (a->mb_capacity && atomic_load_explicit(&sys->mb_waiters, memory_order_seq_cst))
		tr__futex_wake(&a->mb_count, INT_MAX);
	if (cleanup)
		cleanup(state, reason);
	if (a->ext)
		tr__ext_on_stop(sys, a, tr__ctx.self, reason);
	tr__count(sys, TR__C_STOPPED, 1);
	tr__mbox_discard(sys, &w->cache, a);
	tr__actor_bury(sys, a);
}

int tr_stop_self(int reason)
{
	tr__actor *a = tr__ctx.actor;

	if (!a)
		return TR_ENOTACTOR;
	if (!(a->flags & TR__A_STOPPING)) {
		a->flags |= TR__A_STOPPING;
		a->stop_reason = reason;
	}
	return TR_OK;
}

int tr_flush(void)
{
	if (!tr__ctx.actor)
		return TR_ENOTACTOR;
	tr__worker_before_block();
	return TR_OK;
}

tr_ref tr_self(void) { return (tr_ref){tr__ctx.actor ? tr__ctx.self : 0}; }

int tr_self_worker(void) { return tr__ctx.worker ? (int)tr__ctx.worker->index : -1; }

tr_system *tr_self_system(void)
{
	if (tr__ctx.actor)
		return tr__ctx.sys;
	return tr__ctx.worker ? tr__ctx.worker->sys : NULL;
}

void tr__actor_request_stop(tr__actor *a, int reason)
{
	if (!(a->flags & TR__A_STOPPING)) {
		a->flags |= TR__A_STOPPING;
		a->stop_reason = reason;
	}
}

/* Hands one message to the actor: runtime messages to the runtime, replies
 * to the continuation waiting for them, the rest to the behaviour. */
static int tr__deliver(tr__worker *w, tr__actor *a, tr_msg *m)
{
	tr_system *sys = w->sys;
	int rc;

	if (m->flags & TR_MSG_F_SYSTEM) {
		if (!(m->flags & TR_MSG_F_TIMER) || tr__timer_on_deliver(sys, m))
			return tr__sys_dispatch(w, a, m);
		return TR_OK;
	}
	if (m->flags & TR_MSG_F_REPLY)
		return tr__ask_on_reply(w, a, m);
	if (m->flags & TR_MSG_F_TIMER) {
		if (!tr__timer_on_deliver(sys, m))
			return TR_OK; /* cancelled while queued */
		tr__count(sys, TR__C_SENT, 1); /* timer messages count once handled */
	} else if (a->mb_capacity) {
		atomic_fetch_sub_explicit(&a->mb_count, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&sys->mb_waiters, memory_order_seq_cst))
			tr__futex_wake(&a->mb_count, 1);
	}
	tr__ctx.msg = m; /* lets any reply to it mark it answered */
	rc = a->u.live.behaviour(a->u.live.state, m);
	tr__ctx.msg = NULL;
	tr__count(sys, TR__C_DELIVERED, 1);
	/* A request handled without an answer: if the server stops now, the
	 * asker learns "receiver down" at once; otherwise the server keeps it
	 * open (it may answer later via tr_reply_to) until it stops. */
	if ((m->flags & (TR_MSG_F_REQUEST | TR__MSG_F_REPLIED)) == TR_MSG_F_REQUEST) {
		if (rc != 0 || (a->flags & TR__A_STOPPING) ||
		    atomic_load_explicit(&a->killed, memory_order_relaxed))
			tr__ask_down(tr_msg_reply_to(m));
		else
			tr__ask_keep_open(a, m);
	}
	return rc;
}

bool tr__actor_run(tr__worker *w, tr__actor *a)
{
	tr_system *sys = w->sys;
	tr__mpsc_ends q = tr__mbox(a);
	unsigned n = 0, held = 0, batch = sys->cfg.batch;
	uint64_t slice_start = 0;
	tr__link *snapshot;
	bool again;

	tr__ctx.actor = a;
	tr__ctx.sys = sys;
	tr__ctx.self = atomic_load_explicit(&a->ident, memory_order_relaxed);
	tr__count(sys, TR__C_RUNS, 1);
	w->out.on = true;
	/* Messages pushed after this point wait for the next run, so an actor
	 * that sends to itself cannot keep its worker. */
	snapshot = (tr__link *)(atomic_load_explicit(&a->mb_head, memory_order_acquire) &
				~TR__MPSC_IDLE);
	while (!(a->flags & TR__A_STOPPING) && n < batch) {
		tr__link *l;
		tr_msg *m;
		bool user;
		int rc;

		if (atomic_load_explicit(&a->killed, memory_order_relaxed)) {
			tr__actor_request_stop(a, TR_EKILLED);
			break;
		}
		if (atomic_load_explicit(&sys->abort, memory_order_relaxed)) {
			tr__actor_request_stop(a, TR_ESHUTDOWN);
			break;
		}
		l = tr__mpsc_pop(q);
		if (!l || l == TR__MPSC_RETRY)
			break;
		m = (tr_msg *)l;
		/* the next message was written by its sender's core: start
		 * fetching it while this one is handled */
		__builtin_prefetch(a->mb_tail);
		user = !(m->flags & TR_MSG_F_SYSTEM);
		n += user;
		rc = tr__deliver(w, a, m);
		tr__msg_release(sys, &w->cache, m);
		/* sends wait at most TR__OUT_HOLD handled messages: few enough
		 * for latency, enough that a forwarding actor pushes chains */
		if (w->out.held && ++held == TR__OUT_HOLD) {
			tr__outbox_flush(w);
			held = 0;
		}
		if (rc != 0)
			tr__actor_request_stop(a, rc);
		if (l == snapshot)
			break;
		/* the clock only once a run is long enough to need it, so a
		 * short run (most of them) never reads it */
		if (user && n % TR_SLICE_CHECK == 0) {
			uint64_t now = tr__now_ns();
			if (!slice_start)
				slice_start = now;
			else if (now - slice_start >= (uint64_t)sys->cfg.slice_us * 1000u)
				break;
		}
	}
	if (a->flags & TR__A_STOPPING) {
		tr__actor_stop(w, a, a->stop_reason);
		again = false;
		tr__outbox_flush(w);
	} else {
		/* before the mark: a send to itself keeps the actor scheduled */
		tr__outbox_flush(w);
		/* after a successful mark the actor may already run elsewhere */
		again = !tr__mpsc_mark_idle(q);
	}
	w->out.on = false;
	tr__ctx.actor = NULL;
	tr__ctx.self = 0;
	return again;
}

void tr__actor_stop_all_unstarted(tr_system *sys)
{
	uint32_t end = sys->next_fresh;
	tr__mcache mc;

	memset(&mc, 0, sizeof(mc));
	for (uint32_t i = 0; i < end; i++) {
		tr__actor *a = tr__actor_at(sys, i);
		if (!atomic_load_explicit(&a->ident, memory_order_acquire))
			continue;
		tr__ctx.actor = a; /* cleanup sees tr_self(), as on a worker */
		tr__ctx.sys = sys;
		tr__ctx.self = atomic_load_explicit(&a->ident, memory_order_relaxed);
		a->flags |= TR__A_STOPPING;
		atomic_store_explicit(&a->ident, 0, memory_order_release);
		a->stop_reason = TR_ESHUTDOWN;
		if (a->u.live.cleanup)
			a->u.live.cleanup(a->u.live.state, TR_ESHUTDOWN);
		if (a->ext)
			tr__ext_on_stop(sys, a, tr__ctx.self, TR_ESHUTDOWN);
		tr__ctx.actor = NULL;
		tr__ctx.self = 0;
		tr__count(sys, TR__C_STOPPED, 1);
	}
	tr__rcu_synchronize();
	for (uint32_t i = 0; i < end; i++) {
		tr__actor *a = tr__actor_at(sys, i);
		/* STOPPING marks the ones stopped above: without workers, any
		 * earlier death was reset on the spot (tr__actor_bury) */
		if (a->flags & TR__A_STOPPING) {
			tr__actor_reset(sys, &mc, a);
			tr__idx_release(sys, &a->idx, 1);
		}
	}
	tr__mcache_flush(&sys->pool, &mc);
}
