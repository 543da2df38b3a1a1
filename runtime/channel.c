/*
 * Publish/subscribe channels.
 *
 * Readers (publishers) load the current subscriber array under RCU and
 * walk it; writers ((un)subscribe, and the cleanup of stopped subscribers)
 * serialise on the channel's mutex, build a new array, publish it with a
 * release store and retire the old one after a grace period. A
 * subscription object outlives the arrays that point at it: the array
 * retired by the change that removed it carries it on `retired`, and frees
 * it along with itself, so each subscription is freed exactly once.
 *
 * Pattern subscriptions live in one such array per system and are matched
 * against the channel name at publish time.
 */
#include <stdlib.h>
#include <string.h>
#include <urcu/rculfhash.h>

#include "internal.h"

typedef struct tr__sub {
	uint64_t ref;
	_Atomic uint8_t policy;
	_Atomic uint64_t dropped;
	char *pattern;        /* pattern subscriptions only */
	struct tr__sub *next; /* on a retired array's list */
} tr__sub;

typedef struct tr__subs {
	struct rcu_head rcu;
	tr__sub *retired; /* removed by the change that retired this array */
	uint32_t n;
	tr__sub *v[];
} tr__subs;

struct tr_channel {
	struct cds_lfht_node node;
	tr_system *sys;
	pthread_mutex_t mu;
	tr__subs *_Atomic subs;
	size_t len;
	char name[];
};

typedef struct tr__key {
	const char *name;
	size_t len;
} tr__key;

/* ------------------------------------------------------------- matching */

static size_t tr__word(const char *s) { return strcspn(s, "."); }

bool tr_topic_match(const char *p, const char *t)
{
	if (!p || !t)
		return false;
	for (;;) {
		size_t pl = tr__word(p), tl = tr__word(t);

		if (pl == 1 && p[0] == '#') {
			if (!p[1])
				return true; /* trailing '#': any rest, empty too */
			/* '#.' : consume zero or more words of t */
			for (const char *q = t;;) {
				if (tr_topic_match(p + 2, q))
					return true;
				q += tr__word(q);
				if (*q != '.')
					return false;
				q++;
			}
		}
		if (!(pl == 1 && p[0] == '*' && tl > 0) && (pl != tl || memcmp(p, t, pl) != 0))
			return false;
		p += pl;
		t += tl;
		if (!*p)
			return !*t;
		if (!*t) { /* "a.#" and "a.#.#" match "a": '#' may stand for no word */
			while (p[0] == '.' && p[1] == '#' && (!p[2] || p[2] == '.'))
				p += 2;
			return !*p;
		}
		if (*t != '.')
			return false;
		p++;
		t++;
	}
}

/* ------------------------------------------------------- copy-on-write */

static void tr__subs_free_cb(struct rcu_head *head)
{
	tr__subs *old;

	tr__rcu_cb_enter(head);
	old = caa_container_of(head, tr__subs, rcu);
	while (old->retired) {
		tr__sub *s = old->retired;
		old->retired = s->next;
		free(s->pattern);
		free(s);
	}
	free(old);
	tr__rcu_cb_leave();
}

/* Publishes `next` in *slot and retires the previous array (or, with no
 * previous array, frees the removed subscriptions after a grace period in
 * an empty carrier). Caller holds the writers' mutex; `removed` are the
 * subscriptions `next` no longer has. */
static int tr__subs_swap(tr_system *sys, tr__subs *_Atomic *slot, tr__subs *next, tr__sub *removed)
{
	tr__subs *old = atomic_load_explicit(slot, memory_order_relaxed);

	if (!old && removed) {
		old = calloc(1, sizeof(*old));
		if (!old)
			return TR_ENOMEM;
	}
	atomic_store_explicit(slot, next, memory_order_release);
	if (old) {
		old->retired = removed;
		tr__defer_free(sys, &old->rcu, tr__subs_free_cb);
	}
	return TR_OK;
}

/* A copy of `old` (may be NULL) with room for `extra` more, minus the
 * entries `drop` says to drop (their subscriptions go on *removed). */
static tr__subs *tr__subs_copy(const tr__subs *old, uint32_t extra,
			       bool (*drop)(tr__sub *, const void *), const void *arg,
			       tr__sub **removed)
{
	uint32_t n = old ? old->n : 0;
	tr__subs *next = malloc(sizeof(*next) + (n + extra) * sizeof(tr__sub *));

	if (!next)
		return NULL;
	next->retired = NULL;
	next->n = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (drop && drop(old->v[i], arg)) {
			old->v[i]->next = *removed;
			*removed = old->v[i];
		} else {
			next->v[next->n++] = old->v[i];
		}
	}
	return next;
}

static bool tr__drop_ref(tr__sub *s, const void *arg)
{
	const tr__sub *want = arg;
	return s->ref == want->ref &&
	       (!want->pattern || (s->pattern && strcmp(s->pattern, want->pattern) == 0));
}

static bool tr__drop_dead(tr__sub *s, const void *arg)
{
	tr_system *sys = (tr_system *)arg;
	bool alive;

	tr__rcu_read_lock();
	alive = tr__ref_alive(sys, s->ref);
	tr__rcu_read_unlock();
	return !alive;
}

/* Adds or updates a subscription in the array at *slot. */
static int tr__subs_add(tr_system *sys, pthread_mutex_t *mu, tr__subs *_Atomic *slot, tr_ref ref,
			const char *pattern, tr_sub_policy policy)
{
	tr__subs *old, *next;
	tr__sub *s;
	int rc = TR_OK;
	bool alive;

	if (!ref.id || tr__ref_sys(ref.id) != sys->slot ||
	    (policy != TR_SUB_DROP && policy != TR_SUB_REPORT))
		return TR_EINVAL;
	tr__rcu_read_lock();
	alive = tr__ref_alive(sys, ref.id);
	tr__rcu_read_unlock();
	if (!alive)
		return TR_EDEAD;
	pthread_mutex_lock(mu);
	old = atomic_load_explicit(slot, memory_order_relaxed);
	for (uint32_t i = 0; old && i < old->n; i++) {
		s = old->v[i];
		if (s->ref == ref.id &&
		    (!pattern || (s->pattern && strcmp(s->pattern, pattern) == 0))) {
			atomic_store_explicit(&s->policy, (uint8_t)policy, memory_order_relaxed);
			pthread_mutex_unlock(mu);
			return TR_OK;
		}
	}
	s = calloc(1, sizeof(*s));
	next = s ? tr__subs_copy(old, 1, NULL, NULL, NULL) : NULL;
	if (s && pattern && !(s->pattern = strdup(pattern)))
		rc = TR_ENOMEM;
	if (!s || !next || rc != TR_OK) {
		if (s)
			free(s->pattern);
		free(s);
		free(next);
		pthread_mutex_unlock(mu);
		return TR_ENOMEM;
	}
	s->ref = ref.id;
	atomic_init(&s->policy, (uint8_t)policy);
	next->v[next->n++] = s;
	rc = tr__subs_swap(sys, slot, next, NULL);
	pthread_mutex_unlock(mu);
	return rc;
}

static int tr__subs_del(tr_system *sys, pthread_mutex_t *mu, tr__subs *_Atomic *slot, tr_ref ref,
			const char *pattern)
{
	tr__sub want = {.ref = ref.id, .pattern = (char *)pattern};
	tr__sub *removed = NULL;
	tr__subs *next;
	int rc;

	if (!ref.id)
		return TR_EINVAL;
	pthread_mutex_lock(mu);
	next = tr__subs_copy(atomic_load_explicit(slot, memory_order_relaxed), 0, tr__drop_ref, &want,
			     &removed);
	if (!next) {
		rc = TR_ENOMEM;
	} else if (!removed) {
		free(next);
		rc = TR_ENOENT;
	} else {
		rc = tr__subs_swap(sys, slot, next, removed);
	}
	pthread_mutex_unlock(mu);
	return rc;
}

/* Drops subscriptions of stopped actors (found by a publish). */
static void tr__subs_prune(tr_system *sys, pthread_mutex_t *mu, tr__subs *_Atomic *slot)
{
	tr__sub *removed = NULL;
	tr__subs *next;

	pthread_mutex_lock(mu);
	next = tr__subs_copy(atomic_load_explicit(slot, memory_order_relaxed), 0, tr__drop_dead, sys,
			     &removed);
	if (next && removed)
		(void)tr__subs_swap(sys, slot, next, removed);
	else
		free(next);
	pthread_mutex_unlock(mu);
}

/* ----------------------------------------------------------------- channels */

static int tr__chan_match(struct cds_lfht_node *node, const void *key)
{
	const tr_channel *ch = caa_container_of(node, tr_channel, node);
	const tr__key *k = key;

	TR__LFHT_FOUND(ch);
	return ch->len == k->len && memcmp(ch->name, k->name, k->len) == 0;
}

int tr__channels_init(tr_system *sys)
{
	sys->channels = cds_lfht_new_flavor(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
					    &urcu_memb_flavor, NULL);
	return sys->channels ? TR_OK : TR_ENOMEM;
}

static void tr__subs_destroy(tr__subs *s)
{
	if (!s)
		return;
	for (uint32_t i = 0; i < s->n; i++) {
		free(s->v[i]->pattern);
		free(s->v[i]);
	}
	free(s);
}

/* No readers or writers remain. */
void tr__channels_free(tr_system *sys)
{
	struct cds_lfht_iter it;
	tr_channel *ch;

	if (sys->channels) {
		tr__rcu_read_lock();
		cds_lfht_for_each_entry(sys->channels, &it, ch, node) {
			TR__LFHT_FOUND(ch);
			(void)cds_lfht_del(sys->channels, &ch->node);
			tr__subs_destroy(atomic_load_explicit(&ch->subs, memory_order_relaxed));
			pthread_mutex_destroy(&ch->mu);
			free(ch);
		}
		tr__rcu_read_unlock();
		(void)cds_lfht_destroy(sys->channels, NULL);
		sys->channels = NULL;
	}
	tr__subs_destroy(atomic_load_explicit(&sys->patterns, memory_order_relaxed));
	atomic_store_explicit(&sys->patterns, NULL, memory_order_relaxed);
}

/* Length of a valid channel name, 0 if it is not one. A topic with
 * wildcard characters could never be told from a pattern. */
static size_t tr__chan_name_len(const char *name)
{
	size_t len = name ? strnlen(name, TR_NAME_MAX + 1) : 0;
	return (len > TR_NAME_MAX || (len && strpbrk(name, "*#"))) ? 0 : len;
}

int tr_channel_open(tr_system *sys, const char *name, tr_channel **out)
{
	struct cds_lfht_node *n;
	tr_channel *ch;
	tr__key k;
	size_t len = tr__chan_name_len(name);

	if (!sys || !len || !out)
		return TR_EINVAL;
	if (atomic_load_explicit(&sys->state, memory_order_acquire) >= TR__S_DRAINING)
		return TR_ESHUTDOWN;
	ch = calloc(1, sizeof(*ch) + len + 1);
	if (!ch)
		return TR_ENOMEM;
	cds_lfht_node_init(&ch->node);
	ch->sys = sys;
	pthread_mutex_init(&ch->mu, NULL);
	ch->len = len;
	memcpy(ch->name, name, len);
	k = (tr__key){ch->name, len};
	tr__rcu_read_lock();
	TR__LFHT_PUBLISH(ch);
	n = cds_lfht_add_unique(sys->channels, tr__hash_name(name, len), tr__chan_match, &k,
				&ch->node);
	tr__rcu_read_unlock();
	if (n != &ch->node) { /* it existed (channels are never removed) */
		pthread_mutex_destroy(&ch->mu);
		free(ch);
		ch = caa_container_of(n, tr_channel, node);
		TR__LFHT_FOUND(ch);
	}
	*out = ch;
	return TR_OK;
}

int tr_channel_find(tr_system *sys, const char *name, tr_channel **out)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;
	size_t len = tr__chan_name_len(name);
	tr__key k = {name, len};

	if (!sys || !len || !out)
		return TR_EINVAL;
	tr__rcu_read_lock();
	cds_lfht_lookup(sys->channels, tr__hash_name(name, len), tr__chan_match, &k, &it);
	n = cds_lfht_iter_get_node(&it);
	tr__rcu_read_unlock();
	if (!n)
		return TR_ENOENT;
	/* channels live as long as their system: safe outside the section */
	*out = caa_container_of(n, tr_channel, node);
	TR__LFHT_FOUND(*out);
	return TR_OK;
}

const char *tr_channel_name(const tr_channel *ch) { return ch ? ch->name : NULL; }

int tr_subscribe(tr_channel *ch, tr_ref ref, tr_sub_policy policy)
{
	if (!ch)
		return TR_EINVAL;
	return tr__subs_add(ch->sys, &ch->mu, &ch->subs, ref, NULL, policy);
}

int tr_unsubscribe(tr_channel *ch, tr_ref ref)
{
	if (!ch)
		return TR_EINVAL;
	return tr__subs_del(ch->sys, &ch->mu, &ch->subs, ref, NULL);
}

static tr__subs *_Atomic *tr__patterns(tr_system *sys) { return &sys->patterns; }

static bool tr__pattern_ok(const char *pattern)
{
	size_t len = pattern ? strnlen(pattern, TR_NAME_MAX + 1) : 0;
	return len && len <= TR_NAME_MAX;
}

int tr_subscribe_pattern(tr_system *sys, const char *pattern, tr_ref ref, tr_sub_policy policy)
{
	if (!sys || !tr__pattern_ok(pattern))
		return TR_EINVAL;
	return tr__subs_add(sys, &sys->pattern_mu, tr__patterns(sys), ref, pattern, policy);
}

int tr_unsubscribe_pattern(tr_system *sys, const char *pattern, tr_ref ref)
{
	if (!sys || !pattern)
		return TR_EINVAL;
	return tr__subs_del(sys, &sys->pattern_mu, tr__patterns(sys), ref, pattern);
}

/* ----------------------------------------------------------------- publish */

static void tr__shared_put(tr_shared *s, uint32_t n)
{
	if (atomic_fetch_sub_explicit(&s->refs, n, memory_order_acq_rel) == n)
		free(s);
}

static void tr__shared_release(void *p) { tr__shared_put(p, 1); }

/* One delivery; the payload reference it hands over was taken in advance
 * by tr_publish. Inside a read-side section. */
static void tr__fan_out(tr_system *sys, tr__sub *s, uint32_t type, tr_shared *payload,
			tr_pub_result *r)
{
	struct {
		void *ptr;
		tr_dtor dtor;
	} p = {payload, tr__shared_release};
	tr_system *s2;
	tr__actor *a;

	if (tr__resolve(s->ref, false, true, &s2, &a) != TR_OK) {
		r->gone++;
		return;
	}
	if (a->mb_capacity && !tr__try_admit(a)) {
		if (atomic_load_explicit(&s->policy, memory_order_relaxed) == TR_SUB_DROP) {
			atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
			r->dropped++;
		} else {
			r->refused++;
		}
		tr__count(sys, TR__C_REJECTED_FULL, 1);
		return;
	}
	if (tr__post(sys, a, TR_MSG_F_PTR | TR_MSG_F_SHARED, type, 0, &p, 0) != TR_OK) {
		if (a->mb_capacity)
			atomic_fetch_sub_explicit(&a->mb_count, 1, memory_order_relaxed);
		r->refused++;
		return;
	}
	tr__count(sys, TR__C_SENT, 1);
	r->delivered++;
}

int tr_publish(tr_channel *ch, uint32_t type, const void *data, size_t size, tr_pub_result *res)
{
	tr_pub_result r = {0, 0, 0, 0};
	uint32_t pattern_gone = 0;
	tr_shared *payload = NULL;
	tr__subs *subs, *pats;
	tr_system *sys;
	int st;

	if (!ch || (size && !data) || type >= TR_MSG_TYPE_RUNTIME || size > UINT32_MAX)
		return TR_EINVAL;
	sys = ch->sys;
	/* checked inside the section, as sends do: shutdown's grace period
	 * then covers a publish that saw the system running */
	tr__rcu_read_lock();
	st = atomic_load_explicit(&sys->state, memory_order_acquire);
	if (st != TR__S_RUNNING) {
		tr__rcu_read_unlock();
		return st == TR__S_CREATED ? TR_ENOTSTARTED : TR_ESHUTDOWN;
	}
	subs = atomic_load_explicit(&ch->subs, memory_order_acquire);
	pats = atomic_load_explicit(tr__patterns(sys), memory_order_acquire);
	if ((subs && subs->n) || (pats && pats->n)) {
		/* One reference per possible delivery, taken now with one store
		 * rather than one contended atomic add per subscriber; the
		 * publisher gives back the unused ones (and its own) at the end. */
		uint32_t refs = 1 + (subs ? subs->n : 0) + (pats ? pats->n : 0);

		payload = malloc(sizeof(*payload) + size);
		if (!payload) {
			tr__rcu_read_unlock();
			return TR_ENOMEM;
		}
		atomic_init(&payload->refs, refs);
		payload->size = (uint32_t)size;
		if (size)
			memcpy(payload->data, data, size);
		for (uint32_t i = 0; subs && i < subs->n; i++)
			tr__fan_out(sys, subs->v[i], type, payload, &r);
		pattern_gone = r.gone;
		for (uint32_t i = 0; pats && i < pats->n; i++)
			if (tr_topic_match(pats->v[i]->pattern, ch->name))
				tr__fan_out(sys, pats->v[i], type, payload, &r);
		pattern_gone = r.gone - pattern_gone;
		tr__shared_put(payload, refs - r.delivered);
	}
	tr__rcu_read_unlock();
	if (r.gone > pattern_gone)
		tr__subs_prune(sys, &ch->mu, &ch->subs);
	if (pattern_gone)
		tr__subs_prune(sys, &sys->pattern_mu, tr__patterns(sys));
	if (res)
		*res = r;
	return r.refused ? TR_EFULL : TR_OK;
}

static uint64_t tr__dropped(tr__subs *_Atomic *slot, tr_ref ref, const char *pattern)
{
	uint64_t n = 0;
	tr__subs *subs;

	tr__rcu_read_lock();
	subs = atomic_load_explicit(slot, memory_order_acquire);
	for (uint32_t i = 0; subs && i < subs->n; i++) {
		tr__sub *s = subs->v[i];
		if (s->ref == ref.id && (!pattern || strcmp(s->pattern, pattern) == 0))
			n = atomic_load_explicit(&s->dropped, memory_order_relaxed);
	}
	tr__rcu_read_unlock();
	return n;
}

uint64_t tr_subscription_dropped(tr_channel *ch, tr_ref ref)
{
	return ch ? tr__dropped(&ch->subs, ref, NULL) : 0;
}

uint64_t tr_pattern_dropped(tr_system *sys, const char *pattern, tr_ref ref)
{
	return sys && pattern ? tr__dropped(tr__patterns(sys), ref, pattern) : 0;
}
