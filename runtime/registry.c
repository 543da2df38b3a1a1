/*
 * The name registry: name -> actor in a cds_lfht per system.
 *
 * Liveness is checked on every lookup instead of being pushed from the
 * actor's stop path: a binding whose actor stopped reads as absent, and
 * the next registration of that name unlinks it and takes its place. So
 * the stop path pays nothing for names, and a lookup can never return a
 * reference to an actor it did not see alive.
 *
 * Spawn-or-get claims the name first with an entry whose ref is still 0
 * (cds_lfht_add_unique is the single atomic decision); losers see that
 * pending entry and yield until the winner publishes the ref, outside any
 * lock and outside the read-side section (the winner may need a grace
 * period if its actor's init fails).
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/rculfhash.h>

#include "internal.h"

typedef struct tr__name {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	_Atomic uint64_t ref; /* 0 while its spawn_named is in progress */
	size_t len;
	char name[];
} tr__name;

typedef struct tr__key {
	const char *name;
	size_t len;
} tr__key;

uint64_t tr__hash_name(const char *name, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)name[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int tr__name_match(struct cds_lfht_node *node, const void *key)
{
	const tr__name *e = caa_container_of(node, tr__name, node);
	const tr__key *k = key;

	TR__LFHT_FOUND(e);
	return e->len == k->len && memcmp(e->name, k->name, k->len) == 0;
}

static void tr__name_free_cb(struct rcu_head *head)
{
	tr__rcu_cb_enter(head);
	free(caa_container_of(head, tr__name, rcu));
	tr__rcu_cb_leave();
}

int tr__registry_init(tr_system *sys)
{
	sys->names = cds_lfht_new_flavor(64, 64, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
					 &urcu_memb_flavor, NULL);
	return sys->names ? TR_OK : TR_ENOMEM;
}

/* No readers remain (the system left the table a grace period ago). */
void tr__registry_free(tr_system *sys)
{
	struct cds_lfht_iter it;
	tr__name *e;

	if (!sys->names)
		return;
	tr__rcu_read_lock();
	cds_lfht_for_each_entry(sys->names, &it, e, node) {
		TR__LFHT_FOUND(e);
		(void)cds_lfht_del(sys->names, &e->node);
		free(e);
	}
	tr__rcu_read_unlock();
	(void)cds_lfht_destroy(sys->names, NULL);
	sys->names = NULL;
}

static int tr__check_name(tr_system *sys, const char *name, size_t *len)
{
	if (!sys || !name)
		return TR_EINVAL;
	*len = strnlen(name, TR_NAME_MAX + 1);
	return (*len == 0 || *len > TR_NAME_MAX) ? TR_EINVAL : TR_OK;
}

/* Inside a read-side section. */
static tr__name *tr__name_find(tr_system *sys, const tr__key *k, uint64_t hash)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *n;

	cds_lfht_lookup(sys->names, hash, tr__name_match, k, &it);
	n = cds_lfht_iter_get_node(&it);
	if (!n)
		return NULL;
	TR__LFHT_FOUND(caa_container_of(n, tr__name, node));
	return caa_container_of(n, tr__name, node);
}

/* A binding that still counts: pending, or bound to a live actor. */
static bool tr__name_taken(tr_system *sys, tr__name *e)
{
	uint64_t ref = atomic_load_explicit(&e->ref, memory_order_acquire);
	return ref == 0 || tr__ref_alive(sys, ref);
}

/*
 * Inserts e (its ref set, or 0 for pending): TR_OK, or TR_EEXIST if the
 * name is taken. A stale binding found on the way is unlinked and freed
 * after a grace period, then the insert retried. Not inside a read-side
 * section (it takes its own).
 */
static int tr__name_insert(tr_system *sys, tr__name *e, uint64_t hash)
{
	tr__key k = {e->name, e->len};

	for (;;) {
		struct cds_lfht_node *n;
		tr__name *old;
		bool unlinked;

		tr__rcu_read_lock();
		TR__LFHT_PUBLISH(e);
		n = cds_lfht_add_unique(sys->names, hash, tr__name_match, &k, &e->node);
		if (n == &e->node) {
			tr__rcu_read_unlock();
			return TR_OK;
		}
		old = caa_container_of(n, tr__name, node);
		TR__LFHT_FOUND(old);
		if (tr__name_taken(sys, old)) {
			tr__rcu_read_unlock();
			return TR_EEXIST;
		}
		unlinked = cds_lfht_del(sys->names, &old->node) == 0;
		tr__rcu_read_unlock();
		if (unlinked)
			tr__defer_free(sys, &old->rcu, tr__name_free_cb);
	}
}

static tr__name *tr__name_new(const char *name, size_t len, uint64_t ref)
{
	tr__name *e = malloc(sizeof(*e) + len + 1);

	if (!e)
		return NULL;
	cds_lfht_node_init(&e->node);
	atomic_init(&e->ref, ref);
	e->len = len;
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	return e;
}

int tr_register(tr_system *sys, const char *name, tr_ref ref)
{
	tr__name *e;
	size_t len;
	bool alive;
	int rc = tr__check_name(sys, name, &len);

	if (rc != TR_OK)
		return rc;
	if (!ref.id || tr__ref_sys(ref.id) != sys->slot)
		return TR_EINVAL;
	if (atomic_load_explicit(&sys->state, memory_order_acquire) >= TR__S_DRAINING)
		return TR_ESHUTDOWN;
	tr__rcu_read_lock();
	alive = tr__ref_alive(sys, ref.id);
	tr__rcu_read_unlock();
	if (!alive)
		return TR_EDEAD;
	if (!(e = tr__name_new(name, len, ref.id)))
		return TR_ENOMEM;
	rc = tr__name_insert(sys, e, tr__hash_name(name, len));
	if (rc != TR_OK)
		free(e); /* never published */
	return rc;
}

int tr_unregister(tr_system *sys, const char *name)
{
	tr__key k;
	tr__name *e;
	uint64_t ref = 0;
	bool alive = false;
	size_t len;
	int rc = tr__check_name(sys, name, &len);

	if (rc != TR_OK)
		return rc;
	k = (tr__key){name, len};
	tr__rcu_read_lock();
	e = tr__name_find(sys, &k, tr__hash_name(name, len));
	if (e)
		ref = atomic_load_explicit(&e->ref, memory_order_acquire);
	/* a pending spawn_named is not a binding yet: leave it alone */
	if (ref) {
		alive = tr__ref_alive(sys, ref);
		if (cds_lfht_del(sys->names, &e->node) != 0)
			e = NULL; /* someone else unlinked it first */
	} else {
		e = NULL;
	}
	tr__rcu_read_unlock();
	if (e)
		tr__defer_free(sys, &e->rcu, tr__name_free_cb);
	return alive ? TR_OK : TR_ENOENT;
}

int tr_whereis(tr_system *sys, const char *name, tr_ref *out)
{
	tr__key k;
	tr__name *e;
	uint64_t ref = 0;
	size_t len;
	int rc = tr__check_name(sys, name, &len);

	if (rc != TR_OK || !out)
		return TR_EINVAL;
	k = (tr__key){name, len};
	tr__rcu_read_lock();
	e = tr__name_find(sys, &k, tr__hash_name(name, len));
	if (e) {
		ref = atomic_load_explicit(&e->ref, memory_order_acquire);
		if (ref && !tr__ref_alive(sys, ref))
			ref = 0;
	}
	tr__rcu_read_unlock();
	if (!ref)
		return TR_ENOENT;
	*out = (tr_ref){ref};
	return TR_OK;
}

int tr_spawn_named(tr_system *sys, const char *name, const tr_actor_opts *opts, tr_ref *out)
{
	size_t len;
	int rc = tr__check_name(sys, name, &len);
	uint64_t hash;

	if (rc != TR_OK || !opts || !out)
		return TR_EINVAL;
	hash = tr__hash_name(name, len);
	for (;;) {
		tr__name *e;
		tr_ref r;

		if (tr_whereis(sys, name, out) == TR_OK)
			return TR_OK;
		if (!(e = tr__name_new(name, len, 0)))
			return TR_ENOMEM;
		rc = tr__name_insert(sys, e, hash);
		if (rc == TR_EEXIST) {
			free(e);
			sched_yield(); /* a pending spawn, or a live actor: look again */
			continue;
		}
		/* The name is ours: spawn outside any read-side section, then
		 * publish. Nobody unlinks a pending entry but us. */
		rc = tr_spawn_opts(sys, opts, &r);
		if (rc == TR_OK) {
			atomic_store_explicit(&e->ref, r.id, memory_order_release);
			*out = r;
			return TR_OK;
		}
		tr__rcu_read_lock();
		(void)cds_lfht_del(sys->names, &e->node);
		tr__rcu_read_unlock();
		tr__defer_free(sys, &e->rcu, tr__name_free_cb);
		return rc;
	}
}
