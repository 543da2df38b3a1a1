/*
 * Request/response between actors.
 *
 * The asker keeps its outstanding requests in its own table (ext.h): the
 * correlation id carries the entry's index, so a reply finds its entry
 * without a search, and everything that decides a request's outcome (the
 * reply, the deadline, "receiver down") arrives as a message to the asker
 * and is handled by the asker's thread. Exactly-once outcome therefore
 * needs no atomics: whichever message comes first settles the entry, later
 * ones find it gone.
 *
 * Deadlines: a min-heap per actor and a single runtime timer armed for the
 * earliest one. A closed request/reply loop re-arms nothing: new requests
 * have later deadlines than the armed tick, which, when it fires, expires
 * what is due and re-arms for what is left.
 */
#include <stdlib.h>
#include <string.h>

#include "ext.h"

tr__ext *tr__ext_get(tr__actor *a)
{
	if (!a->ext)
		a->ext = calloc(1, sizeof(tr__ext));
	return a->ext;
}

/* ---------------------------------------------------------- deadline heap */

static bool tr__earlier(const tr__ext *x, uint32_t i, uint32_t j)
{
	return x->pend[x->heap[i]].deadline < x->pend[x->heap[j]].deadline;
}

static void tr__heap_swap(tr__ext *x, uint32_t i, uint32_t j)
{
	uint32_t t = x->heap[i];
	x->heap[i] = x->heap[j];
	x->heap[j] = t;
	x->pend[x->heap[i]].heap_pos = i;
	x->pend[x->heap[j]].heap_pos = j;
}

static void tr__heap_fix(tr__ext *x, uint32_t i)
{
	while (i > 0 && tr__earlier(x, i, (i - 1) / 2)) {
		tr__heap_swap(x, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < x->nheap && tr__earlier(x, l, m))
			m = l;
		if (r < x->nheap && tr__earlier(x, r, m))
			m = r;
		if (m == i)
			return;
		tr__heap_swap(x, i, m);
		i = m;
	}
}

static void tr__heap_remove(tr__ext *x, uint32_t e)
{
	uint32_t i = x->pend[e].heap_pos;

	x->nheap--;
	if (i != x->nheap) {
		x->heap[i] = x->heap[x->nheap];
		x->pend[x->heap[i]].heap_pos = i;
		tr__heap_fix(x, i);
	}
}

/* ---------------------------------------------------------- entry table */

static int tr__pend_alloc(tr__ext *x, uint32_t *out)
{
	if (!x->free_head) {
		uint32_t cap = x->npend_cap ? x->npend_cap * 2 : 8;
		tr__pending *p;
		uint32_t *h;

		if (cap > TR__PEND_MAX)
			return TR_ENOMEM;
		p = realloc(x->pend, cap * sizeof(*p));
		if (!p)
			return TR_ENOMEM;
		x->pend = p;
		h = realloc(x->heap, cap * sizeof(*h));
		if (!h)
			return TR_ENOMEM;
		x->heap = h;
		for (uint32_t i = cap; i-- > x->npend_cap;) {
			p[i].corr = 0;
			p[i].next_free = x->free_head;
			x->free_head = i + 1;
		}
		x->npend_cap = cap;
	}
	*out = x->free_head - 1;
	x->free_head = x->pend[*out].next_free;
	return TR_OK;
}

static void tr__pend_release(tr__ext *x, uint32_t e)
{
	x->pend[e].corr = 0;
	x->pend[e].next_free = x->free_head;
	x->free_head = e + 1;
}

/* The entry of `corr`, or UINT32_MAX if that request is settled. */
static uint32_t tr__pend_find(const tr__ext *x, uint64_t corr)
{
	uint32_t e = (uint32_t)(corr & (TR__PEND_MAX - 1));

	if (!x || e >= x->npend_cap || x->pend[e].corr != corr)
		return UINT32_MAX;
	return e;
}

void tr__ask_down(tr_reply_addr to)
{
	int down = TR_EDEAD;

	if (!to.to) {
		tr__rcu_read_lock();
		(void)tr__future_complete(to.corr, TR_EDEAD, NULL);
		tr__rcu_read_unlock();
	} else {
		(void)tr__send_sys(to.to, TR__SYS_ASK_DONE, to.corr, &down, sizeof(down));
	}
}

void tr__ask_keep_open(tr__actor *a, const tr_msg *m)
{
	tr__ext *x = tr__ext_get(a);

	if (!x)
		return; /* out of memory: that asker falls back on its timeout */
	if (!x->open && !(x->open = malloc(TR__OPEN_MAX * sizeof(*x->open))))
		return;
	/* when full, the oldest goes: its asker has most likely timed out */
	x->open[(x->open_head + x->nopen) % TR__OPEN_MAX] = tr_msg_reply_to(m);
	if (x->nopen < TR__OPEN_MAX)
		x->nopen++;
	else
		x->open_head = (x->open_head + 1) % TR__OPEN_MAX;
}

/* The running actor answered `to` itself: forget it. Newest first, since
 * deferred answers usually come soon. */
static void tr__ask_close(tr__actor *a, tr_reply_addr to)
{
	tr__ext *x = a->ext;

	for (uint32_t i = x ? x->nopen : 0; i-- > 0;) {
		tr_reply_addr *e = &x->open[(x->open_head + i) % TR__OPEN_MAX];
		if (e->to != to.to || e->corr != to.corr)
			continue;
		/* keep oldest-first order (eviction relies on it): shift the
		 * newer ones down; usually only a few */
		for (uint32_t j = i; j + 1 < x->nopen; j++)
			x->open[(x->open_head + j) % TR__OPEN_MAX] =
				x->open[(x->open_head + j + 1) % TR__OPEN_MAX];
		x->nopen--;
		return;
	}
}

void tr__ask_free(tr__ext *x)
{
	for (uint32_t i = 0; i < x->nopen; i++)
		tr__ask_down(x->open[(x->open_head + i) % TR__OPEN_MAX]);
	free(x->open);
	free(x->pend);
	free(x->heap);
}

/* Arms the deadline tick if the earliest deadline comes before it. */
static void tr__ask_arm(tr_system *sys, tr__ext *x, uint64_t now)
{
	uint64_t first;

	if (x->tick_deadline && x->tick_deadline <= now)
		x->tick_deadline = 0; /* that tick has fired */
	if (!x->nheap)
		return;
	first = x->pend[x->heap[0]].deadline;
	if (first == UINT64_MAX || (x->tick_deadline && x->tick_deadline <= first))
		return; /* nothing will ever expire, or the armed tick comes first */
	if (tr__timer_sys_after(sys, tr__ctx.self, first > now ? first - now : 0,
				TR__SYS_ASK_TICK, NULL) == TR_OK)
		x->tick_deadline = first;
}

/* Settles entry e with `status` (no reply) and runs its continuation. */
static int tr__ask_settle(tr__actor *a, tr__ext *x, uint32_t e, int status, tr_msg *reply)
{
	tr_reply_fn fn = x->pend[e].fn;
	void *ctx = x->pend[e].ctx;

	tr__heap_remove(x, e);
	tr__pend_release(x, e);
	return fn(a->u.live.state, ctx, status, reply);
}

/* ------------------------------------------------------------------ asking */

static int tr__ask(tr_ref to, uint16_t flags, uint32_t type, const void *data, size_t size,
		   void *ptr, tr_dtor dtor, uint64_t timeout_ns, tr_reply_fn fn, void *ctx)
{
	tr__actor *a = tr__ctx.actor;
	tr_system *sys = tr__ctx.sys;
	uint64_t now, corr;
	tr__ext *x;
	uint32_t e;
	int rc;

	if (!a)
		return TR_ENOTACTOR;
	if (!fn || !to.id || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	x = tr__ext_get(a);
	if (!x || tr__pend_alloc(x, &e) != TR_OK)
		return TR_ENOMEM;
	if (!timeout_ns)
		timeout_ns = (uint64_t)sys->cfg.ask_timeout_ms * 1000000u;
	now = tr__now_ns();
	corr = (++x->seq << TR__PEND_BITS) | e;
	rc = tr__send_msg(to.id, TR_MSG_F_REQUEST | flags, corr, type, data, size, ptr, dtor);
	if (rc == TR_OK || rc == TR_EDEAD || rc == TR_ESHUTDOWN) {
		x->pend[e] = (tr__pending){.corr = corr, .deadline = tr__deadline(now, timeout_ns), .fn = fn,
					   .ctx = ctx, .heap_pos = x->nheap};
		x->heap[x->nheap++] = e;
		tr__heap_fix(x, x->nheap - 1);
	}
	if (rc == TR_OK) {
		tr__ask_arm(sys, x, now);
		return TR_OK;
	}
	if (rc == TR_EDEAD || rc == TR_ESHUTDOWN) {
		/* the outcome is known, but the continuation must not run
		 * inside tr_ask: deliver it as a message to ourselves */
		if ((flags & TR_MSG_F_PTR) && ptr && dtor)
			dtor(ptr);
		if (tr__send_sys(tr__ctx.self, TR__SYS_ASK_DONE, corr, &rc, sizeof(rc)) == TR_OK)
			return TR_OK;
		tr__heap_remove(x, e);
	}
	tr__pend_release(x, e);
	return rc;
}

int tr_ask(tr_ref to, uint32_t type, const void *data, size_t size, uint64_t timeout_ns,
	   tr_reply_fn fn, void *ctx)
{
	if (size && !data)
		return TR_EINVAL;
	if (size > TR_MSG_INLINE_MAX)
		return TR_E2BIG;
	return tr__ask(to, 0, type, data, size, NULL, NULL, timeout_ns, fn, ctx);
}

int tr_ask_ptr(tr_ref to, uint32_t type, void **ptr_p, tr_dtor dtor, uint64_t timeout_ns,
	       tr_reply_fn fn, void *ctx)
{
	int rc;

	if (!ptr_p)
		return TR_EINVAL;
	rc = tr__ask(to, TR_MSG_F_PTR, type, NULL, 0, *ptr_p, dtor, timeout_ns, fn, ctx);
	if (rc == TR_OK)
		*ptr_p = NULL;
	return rc;
}

/* --------------------------------------------------- the asker's messages */

int tr__ask_on_reply(tr__worker *w, tr__actor *a, tr_msg *m)
{
	uint32_t e = tr__pend_find(a->ext, m->corr);
	int rc;

	if (e == UINT32_MAX) {
		/* settled already (timed out, or a second answer) */
		tr__count(w->sys, TR__C_LATE_REPLIES, 1);
		tr__count(w->sys, TR__C_UNDELIVERED, 1);
		tr__count(w->sys, TR__C_DEAD_LETTERS, 1);
		return TR_OK;
	}
	rc = tr__ask_settle(a, a->ext, e, TR_OK, m);
	tr__count(w->sys, TR__C_DELIVERED, 1);
	return rc;
}

int tr__ask_on_sys(tr__worker *w, tr__actor *a, tr_msg *m)
{
	tr__ext *x = a->ext;
	uint64_t now;

	if (m->type == TR__SYS_ASK_DONE) {
		uint32_t e = tr__pend_find(x, m->corr);
		int status;

		if (e == UINT32_MAX)
			return TR_OK;
		memcpy(&status, m->u.bytes, sizeof(status));
		return tr__ask_settle(a, x, e, status, NULL);
	}
	if (!x) /* TR__SYS_ASK_TICK */
		return TR_OK;
	now = tr__now_ns();
	if (x->tick_deadline <= now)
		x->tick_deadline = 0;
	/* Expire one at a time: a continuation may ask again. */
	while (x->nheap && x->pend[x->heap[0]].deadline <= now) {
		int rc = tr__ask_settle(a, x, x->heap[0], TR_ETIMEDOUT, NULL);
		if (rc != TR_OK || (a->flags & TR__A_STOPPING))
			return rc;
	}
	tr__ask_arm(w->sys, x, now);
	return TR_OK;
}

/* --------------------------------------------------------------- replying */

tr_reply_addr tr_msg_reply_to(const tr_msg *m)
{
	if (!m || !(m->flags & TR_MSG_F_REQUEST))
		return (tr_reply_addr){0, 0};
	if (m->flags & TR__MSG_F_FUTURE)
		return (tr_reply_addr){0, m->corr};
	return (tr_reply_addr){m->sender.id, m->corr};
}

/* Replies to a future: the reply message is handed to it directly. */
static int tr__reply_future(uint64_t fid, uint16_t flags, uint32_t type, const void *data,
			    size_t size)
{
	tr_system *sys;
	tr_msg *m;
	int rc = TR_OK;

	tr__rcu_read_lock();
	sys = tr__system_lookup(tr__ref_sys(fid));
	m = sys ? tr__msg_alloc(sys, (flags & TR_MSG_F_PTR) ? 0 : tr__msg_class_for(size)) : NULL;
	if (!sys) {
		rc = TR_EDEAD;
	} else if (!m) {
		rc = TR_ENOMEM;
	} else {
		m->flags |= flags | TR_MSG_F_REPLY;
		m->sender.id = tr__ctx.self;
		m->corr = fid;
		m->type = type;
		m->size = (flags & TR_MSG_F_PTR) ? 0 : (uint16_t)size;
		memcpy(m->u.bytes, data, (flags & TR_MSG_F_PTR) ? sizeof(m->u.p) : size);
		rc = tr__future_complete(fid, TR_OK, m);
		if (rc != TR_OK) {
			tr__msg_free(sys, m); /* the caller keeps a pointer payload */
			if (rc == TR_EAGAIN) {
				/* decided already: accepted and discarded, as for
				 * an asking actor */
				tr__count(sys, TR__C_LATE_REPLIES, 1);
				rc = TR_OK;
			} else {
				tr__count(sys, TR__C_DEAD_LETTERS, 1);
			}
		}
	}
	tr__rcu_read_unlock();
	return rc;
}

static int tr__reply(tr_reply_addr to, uint16_t flags, uint32_t type, const void *data, size_t size,
		     void *ptr, tr_dtor dtor)
{
	struct {
		void *ptr;
		tr_dtor dtor;
	} p = {ptr, dtor};

	tr_msg *cur = tr__ctx.msg;
	tr_reply_addr cur_to;

	if (!to.corr || type >= TR_MSG_TYPE_RUNTIME)
		return TR_EINVAL;
	cur_to = tr_msg_reply_to(cur);
	if (cur && cur_to.to == to.to && cur_to.corr == to.corr)
		cur->flags |= TR__MSG_F_REPLIED; /* the request being handled: not kept open */
	else if (tr__ctx.actor && tr__ctx.actor->ext && tr__ctx.actor->ext->nopen)
		tr__ask_close(tr__ctx.actor, to);
	if (!to.to)
		return tr__reply_future(to.corr, flags, type, (flags & TR_MSG_F_PTR) ? (void *)&p : data,
					size);
	return tr__send_msg(to.to, TR_MSG_F_REPLY | flags, to.corr, type, data, size, ptr, dtor);
}

int tr_reply_to(tr_reply_addr to, uint32_t type, const void *data, size_t size)
{
	if (size && !data)
		return TR_EINVAL;
	if (size > TR_MSG_INLINE_MAX)
		return TR_E2BIG;
	return tr__reply(to, 0, type, data, size, NULL, NULL);
}

int tr_reply(const tr_msg *request, uint32_t type, const void *data, size_t size)
{
	if (!request || !(request->flags & TR_MSG_F_REQUEST))
		return TR_EINVAL;
	return tr_reply_to(tr_msg_reply_to(request), type, data, size);
}

int tr_reply_ptr(tr_reply_addr to, uint32_t type, void **ptr_p, tr_dtor dtor)
{
	int rc;

	if (!ptr_p)
		return TR_EINVAL;
	rc = tr__reply(to, TR_MSG_F_PTR, type, NULL, 0, *ptr_p, dtor);
	if (rc == TR_OK)
		*ptr_p = NULL;
	return rc;
}
