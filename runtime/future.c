/*
 * Futures: how a thread that is not an actor waits for a reply.
 *
 * A future is a slot in type-stable chunks owned by the target's system;
 * the request carries the future's id (system slot | generation | index) as
 * its correlation id, so a reply, the timeout and "receiver down" can each
 * try to complete it from any thread. One CAS on the state word
 * (PENDING -> COMPLETING) picks the winner; losers find the generation or
 * phase changed and discard what they brought (a late reply). A destroyed
 * future bumps the generation, so nothing completes it afterwards.
 *
 * Waiting: each future has a futex word; tr_future_wait_any sleeps on a
 * process-wide completion counter instead, since its futures may belong to
 * several systems. Both are woken only when somebody sleeps.
 */
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TR__FCHUNK_BITS 10u
#define TR__FCHUNK (1u << TR__FCHUNK_BITS)
#define TR__FNCHUNKS (TR_ACTORS_MAX / TR__FCHUNK)

enum { TR__F_FREE, TR__F_PENDING, TR__F_PENDING_CB, TR__F_COMPLETING, TR__F_DONE };

struct tr_future {
	_Atomic uint64_t state; /* generation << 3 | phase */
	_Atomic uint32_t done;  /* futex word: 1 once DONE */
	_Atomic uint32_t waiters;
	int status;
	uint32_t idx;
	tr_msg *reply;
	tr_system *sys;
	tr_timer timer;
	tr_future_fn cb;
	void *cb_ctx;
	uint32_t next_free; /* index + 1 */
};

struct tr__futures {
	pthread_mutex_t mu;
	_Atomic(tr_future *) *chunks;
	uint32_t next_fresh;
	uint32_t free_head;
};

static _Atomic uint32_t tr__fut_epoch;
static _Atomic uint32_t tr__fut_epoch_waiters;

static inline uint64_t tr__fstate(uint32_t gen, unsigned phase) { return ((uint64_t)gen << 3) | phase; }
static inline uint32_t tr__fgen(uint64_t st) { return (uint32_t)(st >> 3); }
static inline unsigned tr__fphase(uint64_t st) { return (unsigned)(st & 7u); }

int tr__futures_init(tr_system *sys)
{
	struct tr__futures *f = calloc(1, sizeof(*f));

	if (!f)
		return TR_ENOMEM;
	f->chunks = calloc(TR__FNCHUNKS, sizeof(*f->chunks));
	if (!f->chunks) {
		free(f);
		return TR_ENOMEM;
	}
	pthread_mutex_init(&f->mu, NULL);
	sys->futures = f;
	return TR_OK;
}

void tr__futures_free(tr_system *sys)
{
	struct tr__futures *f = sys->futures;

	if (!f)
		return;
	for (uint32_t c = 0; c < TR__FNCHUNKS; c++)
		free(atomic_load_explicit(&f->chunks[c], memory_order_relaxed));
	free(f->chunks);
	pthread_mutex_destroy(&f->mu);
	free(f);
	sys->futures = NULL;
}

static tr_future *tr__future_at(struct tr__futures *fs, uint32_t idx)
{
	tr_future *c = atomic_load_explicit(&fs->chunks[idx >> TR__FCHUNK_BITS], memory_order_acquire);
	return c ? &c[idx & (TR__FCHUNK - 1)] : NULL;
}

static tr_future *tr__future_alloc(tr_system *sys)
{
	struct tr__futures *fs = sys->futures;
	tr_future *f = NULL;

	pthread_mutex_lock(&fs->mu);
	if (fs->free_head) {
		f = tr__future_at(fs, fs->free_head - 1);
		fs->free_head = f->next_free;
	} else if (fs->next_fresh < TR_ACTORS_MAX) {
		if (fs->next_fresh % TR__FCHUNK == 0) {
			tr_future *c = calloc(TR__FCHUNK, sizeof(*c));
			if (c) {
				for (uint32_t i = 0; i < TR__FCHUNK; i++) {
					c[i].idx = fs->next_fresh + i;
					atomic_init(&c[i].state, tr__fstate(sys->gen_seed | 1u, TR__F_FREE));
				}
				atomic_store_explicit(&fs->chunks[fs->next_fresh / TR__FCHUNK], c,
						      memory_order_release);
			}
		}
		if (atomic_load_explicit(&fs->chunks[fs->next_fresh / TR__FCHUNK], memory_order_relaxed))
			f = tr__future_at(fs, fs->next_fresh++);
	}
	pthread_mutex_unlock(&fs->mu);
	return f;
}

/* The caller moved the future to FREE (next generation). */
static void tr__future_release(tr_future *f)
{
	struct tr__futures *fs = f->sys->futures;

	pthread_mutex_lock(&fs->mu);
	f->next_free = fs->free_head;
	fs->free_head = f->idx + 1;
	pthread_mutex_unlock(&fs->mu);
}

int tr__future_complete(uint64_t fid, int status, tr_msg *reply)
{
	tr_system *sys = tr__system_lookup(tr__ref_sys(fid));
	uint32_t gen = (uint32_t)(fid >> 24);
	tr_future *f;
	uint64_t st;
	unsigned phase;

	if (!sys || !sys->futures || !(f = tr__future_at(sys->futures, tr__ref_idx(fid))))
		return TR_EDEAD;
	st = atomic_load_explicit(&f->state, memory_order_acquire);
	do {
		phase = tr__fphase(st);
		if (tr__fgen(st) != gen)
			return TR_EDEAD;
		if (phase != TR__F_PENDING && phase != TR__F_PENDING_CB)
			return TR_EAGAIN;
	} while (!atomic_compare_exchange_weak_explicit(&f->state, &st,
							tr__fstate(gen, TR__F_COMPLETING),
							memory_order_acq_rel, memory_order_acquire));
	f->status = status;
	f->reply = reply;
	if (status != TR_ETIMEDOUT)
		(void)tr_timer_cancel(f->timer);
	atomic_store_explicit(&f->state, tr__fstate(gen, TR__F_DONE), memory_order_release);
	/* seq_cst pairs with the waiters' increment-then-check */
	atomic_store_explicit(&f->done, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&f->waiters, memory_order_seq_cst))
		tr__futex_wake(&f->done, INT_MAX);
	atomic_fetch_add_explicit(&tr__fut_epoch, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&tr__fut_epoch_waiters, memory_order_seq_cst))
		tr__futex_wake(&tr__fut_epoch, INT_MAX);
	if (phase == TR__F_PENDING_CB)
		f->cb(f->cb_ctx, f, status);
	return TR_OK;
}

int tr_ask_future(tr_ref to, uint32_t type, const void *data, size_t size, uint64_t timeout_ns,
		  tr_future **out)
{
	tr_system *sys;
	tr_future *f;
	uint64_t fid;
	uint32_t gen;
	int rc, st;

	if (!out || !to.id || (size && !data) || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	if (size > TR_MSG_INLINE_MAX)
		return TR_E2BIG;
	tr__rcu_read_lock();
	sys = tr__system_lookup(tr__ref_sys(to.id));
	st = sys ? atomic_load_explicit(&sys->state, memory_order_acquire) : TR__S_DONE;
	rc = !sys ? TR_EDEAD
	     : st == TR__S_CREATED ? TR_ENOTSTARTED
	     : st != TR__S_RUNNING ? TR_ESHUTDOWN
				   : TR_OK;
	f = rc == TR_OK ? tr__future_alloc(sys) : NULL;
	if (rc == TR_OK && !f)
		rc = TR_ENOMEM;
	if (rc != TR_OK) {
		tr__rcu_read_unlock();
		return rc;
	}
	gen = tr__fgen(atomic_load_explicit(&f->state, memory_order_relaxed));
	fid = tr__ref_make(sys->slot, gen, f->idx);
	f->sys = sys;
	f->reply = NULL;
	f->cb = NULL;
	f->timer = TR_TIMER_NONE;
	atomic_store_explicit(&f->done, 0, memory_order_relaxed);
	atomic_store_explicit(&f->state, tr__fstate(gen, TR__F_PENDING), memory_order_release);
	if (!timeout_ns)
		timeout_ns = (uint64_t)sys->cfg.ask_timeout_ms * 1000000u;
	/* armed before the request leaves, so a completion can cancel it */
	rc = tr__timer_future_after(sys, fid, timeout_ns, &f->timer);
	tr__rcu_read_unlock();
	if (rc == TR_OK)
		rc = tr__send_msg(to.id, TR_MSG_F_REQUEST | TR__MSG_F_FUTURE, fid, type, data, size,
				  NULL, NULL);
	if (rc == TR_EDEAD || rc == TR_ESHUTDOWN) {
		tr__rcu_read_lock();
		(void)tr__future_complete(fid, rc, NULL);
		tr__rcu_read_unlock();
		rc = TR_OK;
	}
	if (rc != TR_OK) {
		tr_future_destroy(&f);
		return rc;
	}
	*out = f;
	return TR_OK;
}

int tr_future_wait(tr_future *f, int64_t wait_ns)
{
	uint64_t deadline;

	if (!f)
		return TR_EINVAL;
	if (atomic_load_explicit(&f->done, memory_order_acquire))
		return f->status;
	if (wait_ns == 0)
		return TR_EAGAIN;
	deadline = wait_ns > 0 ? tr__now_ns() + (uint64_t)wait_ns : UINT64_MAX;
	atomic_fetch_add_explicit(&f->waiters, 1, memory_order_seq_cst);
	while (!atomic_load_explicit(&f->done, memory_order_seq_cst)) {
		uint64_t now = tr__now_ns();
		if (now >= deadline)
			break;
		tr__futex_wait(&f->done, 0, deadline == UINT64_MAX ? -1 : (int64_t)(deadline - now));
	}
	atomic_fetch_sub_explicit(&f->waiters, 1, memory_order_relaxed);
	return atomic_load_explicit(&f->done, memory_order_acquire) ? f->status : TR_EAGAIN;
}

int tr_future_poll(tr_future *f) { return tr_future_wait(f, 0); }

tr_msg *tr_future_reply(tr_future *f)
{
	if (!f || !atomic_load_explicit(&f->done, memory_order_acquire) || f->status != TR_OK)
		return NULL;
	return f->reply;
}

int tr_future_then(tr_future *f, tr_future_fn fn, void *ctx)
{
	uint64_t st;

	if (!f || !fn || f->cb)
		return TR_EINVAL;
	f->cb = fn;
	f->cb_ctx = ctx;
	st = atomic_load_explicit(&f->state, memory_order_acquire);
	for (;;) {
		unsigned phase = tr__fphase(st);
		if (phase == TR__F_PENDING) {
			/* release: the completer that sees PENDING_CB sees cb */
			if (atomic_compare_exchange_weak_explicit(
				    &f->state, &st, tr__fstate(tr__fgen(st), TR__F_PENDING_CB),
				    memory_order_acq_rel, memory_order_acquire))
				return TR_OK;
		} else if (phase == TR__F_COMPLETING) {
			sched_yield();
			st = atomic_load_explicit(&f->state, memory_order_acquire);
		} else {
			break;
		}
	}
	fn(ctx, f, f->status);
	return TR_OK;
}

int tr_future_wait_all(tr_future *const *fs, size_t n, int64_t wait_ns)
{
	uint64_t deadline = wait_ns >= 0 ? tr__now_ns() + (uint64_t)wait_ns : UINT64_MAX;

	if (!fs && n)
		return TR_EINVAL;
	for (size_t i = 0; i < n; i++) {
		uint64_t now = tr__now_ns();
		int64_t left = deadline == UINT64_MAX ? -1
			       : now >= deadline      ? 0
						      : (int64_t)(deadline - now);
		if (fs[i] && tr_future_wait(fs[i], left) == TR_EAGAIN)
			return TR_EAGAIN;
	}
	return TR_OK;
}

int tr_future_wait_any(tr_future *const *fs, size_t n, int64_t wait_ns, size_t *index)
{
	uint64_t deadline = wait_ns >= 0 ? tr__now_ns() + (uint64_t)wait_ns : UINT64_MAX;

	if (!fs || !index)
		return TR_EINVAL;
	for (;;) {
		uint32_t epoch = atomic_load_explicit(&tr__fut_epoch, memory_order_seq_cst);
		bool any = false;
		uint64_t now;

		for (size_t i = 0; i < n; i++) {
			if (!fs[i])
				continue;
			any = true;
			if (atomic_load_explicit(&fs[i]->done, memory_order_acquire)) {
				*index = i;
				return TR_OK;
			}
		}
		if (!any)
			return TR_EINVAL;
		now = tr__now_ns();
		if (now >= deadline)
			return TR_EAGAIN;
		atomic_fetch_add_explicit(&tr__fut_epoch_waiters, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&tr__fut_epoch, memory_order_seq_cst) == epoch)
			tr__futex_wait(&tr__fut_epoch, epoch,
				       deadline == UINT64_MAX ? -1 : (int64_t)(deadline - now));
		atomic_fetch_sub_explicit(&tr__fut_epoch_waiters, 1, memory_order_relaxed);
	}
}

void tr_future_destroy(tr_future **fp)
{
	tr_future *f;
	uint64_t st;

	if (!fp || !(f = *fp))
		return;
	st = atomic_load_explicit(&f->state, memory_order_acquire);
	for (;;) {
		uint32_t gen = tr__fgen(st);
		unsigned phase = tr__fphase(st);
		uint64_t next = tr__fstate(gen + 1 ? gen + 1 : 1, TR__F_FREE);

		if (phase == TR__F_COMPLETING) {
			sched_yield();
			st = atomic_load_explicit(&f->state, memory_order_acquire);
			continue;
		}
		if (phase == TR__F_DONE) {
			atomic_store_explicit(&f->state, next, memory_order_release);
			break;
		}
		/* pending: abandon it; whatever completes it later finds a
		 * new generation */
		if (atomic_compare_exchange_weak_explicit(&f->state, &st, next, memory_order_acq_rel,
							  memory_order_acquire)) {
			(void)tr_timer_cancel(f->timer);
			break;
		}
	}
	if (f->reply) {
		tr__rcu_read_lock();
		if ((f->reply->flags & TR_MSG_F_PTR) && f->reply->u.p.ptr && f->reply->u.p.dtor)
			f->reply->u.p.dtor(f->reply->u.p.ptr);
		tr__msg_free(f->sys, f->reply);
		tr__rcu_read_unlock();
		f->reply = NULL;
	}
	tr__future_release(f);
	*fp = NULL;
}
