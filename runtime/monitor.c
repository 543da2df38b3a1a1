/*
 * Monitors, links and the runtime messages that carry them.
 *
 * Each side keeps its own half (ext.h) and changes it only on its own
 * thread: tr_monitor sends MONITOR to the target, which records the
 * watcher; when the target stops it sends DOWN to every watcher. A MONITOR
 * or LINK that reaches a mailbox too late (the target stopped first) is
 * answered by the runtime when it discards that mailbox, so no watcher or
 * linked actor is ever left without its notification.
 */
#include <stdlib.h>
#include <string.h>

#include "ext.h"

/* ------------------------------------------------------------ reference sets */

int tr__refs_add(tr__refs *r, uint64_t id)
{
	if (r->n == r->cap) {
		uint32_t cap = r->cap ? r->cap * 2 : 4;
		uint64_t *v = realloc(r->v, cap * sizeof(*v));
		if (!v)
			return TR_ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = id;
	return TR_OK;
}

bool tr__refs_del(tr__refs *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->n; i++)
		if (r->v[i] == id) {
			r->v[i] = r->v[--r->n];
			return true;
		}
	return false;
}

bool tr__refs_has(const tr__refs *r, uint64_t id)
{
	for (uint32_t i = 0; i < r->n; i++)
		if (r->v[i] == id)
			return true;
	return false;
}

void tr__refs_free(tr__refs *r)
{
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}

/* --------------------------------------------------------------- public API */

static int tr__check_peer(tr_ref target)
{
	if (!tr__ctx.actor)
		return TR_ENOTACTOR;
	if (!target.id || target.id == tr__ctx.self)
		return TR_EINVAL;
	return TR_OK;
}

/* Tells the calling actor, by a message to itself, that `who` is gone. */
static int tr__notify_self(uint32_t kind, uint64_t who)
{
	tr_down d = {{who}, TR_EDEAD};
	return tr__send_sys(tr__ctx.self, kind, 0, &d, sizeof(d));
}

int tr_monitor(tr_ref target)
{
	int rc = tr__check_peer(target);

	if (rc != TR_OK)
		return rc;
	rc = tr__send_sys(target.id, TR__SYS_MONITOR, 0, NULL, 0);
	return rc == TR_EDEAD ? tr__notify_self(TR__SYS_DOWN, target.id) : rc;
}

int tr_demonitor(tr_ref target)
{
	int rc = tr__check_peer(target);

	if (rc != TR_OK)
		return rc;
	rc = tr__send_sys(target.id, TR__SYS_DEMONITOR, 0, NULL, 0);
	return rc == TR_EDEAD ? TR_OK : rc;
}

int tr_link(tr_ref target)
{
	int rc = tr__check_peer(target);
	tr__ext *x;

	if (rc != TR_OK)
		return rc;
	x = tr__ext_get(tr__ctx.actor);
	if (!x)
		return TR_ENOMEM;
	if (tr__refs_has(&x->links, target.id))
		return TR_OK;
	if (tr__refs_add(&x->links, target.id) != TR_OK)
		return TR_ENOMEM;
	rc = tr__send_sys(target.id, TR__SYS_LINK, 0, NULL, 0);
	return rc == TR_EDEAD ? tr__notify_self(TR__SYS_EXIT, target.id) : rc;
}

int tr_unlink(tr_ref target)
{
	int rc = tr__check_peer(target);
	tr__ext *x = tr__ctx.actor ? tr__ctx.actor->ext : NULL;

	if (rc != TR_OK)
		return rc;
	if (x && tr__refs_del(&x->links, target.id)) {
		rc = tr__send_sys(target.id, TR__SYS_UNLINK, 0, NULL, 0);
		return rc == TR_EDEAD ? TR_OK : rc;
	}
	return TR_OK;
}

int tr_trap_exit(bool on)
{
	tr__ext *x;

	if (!tr__ctx.actor)
		return TR_ENOTACTOR;
	x = tr__ext_get(tr__ctx.actor);
	if (!x)
		return TR_ENOMEM;
	x->trap_exit = on;
	return TR_OK;
}

/* ---------------------------------------------------------- runtime messages */

/* Shows a runtime notification to the behaviour as a user-visible message. */
static int tr__show(tr__actor *a, tr_msg *m, uint32_t type)
{
	m->type = type;
	m->flags &= (uint16_t)~TR_MSG_F_SYSTEM;
	return a->u.live.behaviour(a->u.live.state, m);
}

int tr__sys_dispatch(tr__worker *w, tr__actor *a, tr_msg *m)
{
	tr__ext *x = a->ext;
	uint64_t from = m->sender.id;
	tr_down d;
	int reason;

	switch (m->type) {
	case TR__SYS_STOP:
		memcpy(&reason, m->u.bytes, sizeof(reason));
		tr__actor_request_stop(a, reason);
		return TR_OK;
	case TR__SYS_KILL:
		tr__actor_request_stop(a, TR_EKILLED);
		return TR_OK;
	case TR__SYS_ASK_DONE:
	case TR__SYS_ASK_TICK:
		return tr__ask_on_sys(w, a, m);
	case TR__SYS_MONITOR:
		x = tr__ext_get(a);
		return x ? tr__refs_add(&x->watchers, from) : TR_ENOMEM;
	case TR__SYS_DEMONITOR:
		if (x)
			tr__refs_del(&x->watchers, from);
		return TR_OK;
	case TR__SYS_LINK:
		x = tr__ext_get(a);
		if (!x)
			return TR_ENOMEM;
		return tr__refs_has(&x->links, from) ? TR_OK : tr__refs_add(&x->links, from);
	case TR__SYS_UNLINK:
		if (x)
			tr__refs_del(&x->links, from);
		return TR_OK;
	case TR__SYS_EXIT:
		memcpy(&d, m->u.bytes, sizeof(d));
		/* only a link that still exists carries the signal: once
		 * tr_unlink returned, the partner's exit has no effect */
		if (!x || !tr__refs_del(&x->links, d.who.id))
			return TR_OK;
		if (x->trap_exit)
			return tr__show(a, m, TR_MSG_EXIT);
		if (d.reason != TR_OK)
			tr__actor_request_stop(a, d.reason);
		return TR_OK;
	case TR__SYS_DOWN:
		return tr__show(a, m, TR_MSG_DOWN);
	default:
		return TR_OK;
	}
}

void tr__ext_on_stop(tr_system *sys, tr__actor *a, uint64_t self, int reason)
{
	tr__ext *x = a->ext;
	tr_down d = {{self}, reason};

	(void)sys;
	a->ext = NULL;
	for (uint32_t i = 0; i < x->watchers.n; i++)
		(void)tr__send_sys(x->watchers.v[i], TR__SYS_DOWN, 0, &d, sizeof(d));
	for (uint32_t i = 0; i < x->links.n; i++)
		(void)tr__send_sys(x->links.v[i], TR__SYS_EXIT, 0, &d, sizeof(d));
	/* pending requests die with the asker: their replies and ticks will
	 * find no actor (dead letters), their continuations never run */
	tr__ask_free(x);
	tr__refs_free(&x->watchers);
	tr__refs_free(&x->links);
	free(x);
}

void tr__ext_on_discard(tr_system *sys, tr_msg *m, uint64_t self, int reason)
{
	tr_down d = {{self}, reason};

	(void)sys;
	if (m->flags & TR_MSG_F_REQUEST)
		tr__ask_down(tr_msg_reply_to(m));
	else if (m->type == TR__SYS_MONITOR) {
		(void)tr__send_sys(m->sender.id, TR__SYS_DOWN, 0, &d, sizeof(d));
	} else if (m->type == TR__SYS_LINK) {
		(void)tr__send_sys(m->sender.id, TR__SYS_EXIT, 0, &d, sizeof(d));
	}
}
