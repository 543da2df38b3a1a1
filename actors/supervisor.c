/*
 * Supervisors: an actor that starts children from specifications, monitors
 * them and restarts them by a strategy, within a restart intensity.
 *
 * The supervisor is an ordinary actor built on the public API only: its
 * init hook starts the children (tr_monitor works there, tr_self() names the
 * supervisor), its behaviour handles the children's TR_MSG_DOWN, and its
 * cleanup hook stops whatever children are still alive.
 *
 * State machine, per child:
 *   RUNNING   started and monitored; its DOWN is a stop to react to
 *   STOPPING  the supervisor asked it to stop (group restart or giving up)
 *             and waits for its DOWN, whatever reason that DOWN carries
 *   PENDING   down, to be started again
 *   DONE      down for good (temporary, transient that stopped with TR_OK,
 *             system shutdown, or the supervisor gave up)
 * and for the whole supervisor: while any child is STOPPING nothing is
 * started (a group restart starts its children only once every member is
 * down, in spec order); once giving up, it fails as soon as no child is
 * STOPPING any more.
 *
 * Everything above is touched only by the supervisor actor, which the runtime
 * runs one message at a time, so it needs no locks. What other threads read
 * (the current child references and the counters) is kept in atomics.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"

#define SUP_DEFAULT_MAX_RESTARTS 3u
#define SUP_DEFAULT_PERIOD_MS 5000u

/* The supervisor's note to itself to retry starts that failed. A user type
 * (runtime types cannot be sent); any sender other than the supervisor itself
 * is ignored, so a user message of the same type does no harm. */
#define SUP_MSG_RETRY (TR_MSG_TYPE_RUNTIME - 1u)

enum sup_child_status {
	SUP_RUNNING,
	SUP_STOPPING,
	SUP_PENDING,
	SUP_DONE,
};

struct sup_child {
	tr_child_spec spec; /* name points at our own copy */
	tr_ref ref;         /* current incarnation while RUNNING or STOPPING */
	int status;         /* enum sup_child_status */
	_Atomic uint64_t cur; /* ref published to tr_supervisor_child */
};

struct tr_supervisor {
	/* One reference for the actor (dropped by its cleanup hook, or by
	 * tr_supervisor_start if the spawn failed) and one for the caller's
	 * handle (tr_supervisor_release). */
	atomic_uint refs;
	tr_system *sys;
	tr_strategy strategy;
	unsigned max_restarts;
	uint64_t period_ns;
	size_t n;
	struct sup_child *kids;

	/* Actor-only from here to the counters. */
	size_t nstopping;   /* children in SUP_STOPPING */
	bool giving_up;
	bool retry_queued;  /* a SUP_MSG_RETRY is in our mailbox */
	/* Restart times (CLOCK_MONOTONIC ns) within the last period: a ring
	 * that grows on demand up to max_restarts entries, so a high intensity
	 * costs memory only if restarts really come that fast. */
	uint64_t *ring;
	size_t ring_cap, ring_head, ring_len;

	_Atomic uint64_t restarts;
	_Atomic uint64_t child_exits;
	_Atomic uint64_t escalations;
};

/* ------------------------------------------------------------- helpers */

static uint64_t sup_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sup_free(struct tr_supervisor *s)
{
	if (s->kids) {
		for (size_t i = 0; i < s->n; i++)
			free((char *)s->kids[i].spec.name);
	}
	free(s->kids);
	free(s->ring);
	free(s);
}

static void sup_put(struct tr_supervisor *s)
{
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		sup_free(s);
}

static void sup_publish(struct sup_child *c, tr_ref r)
{
	atomic_store_explicit(&c->cur, r.id, memory_order_release);
}

/*
 * Records one restart (or restart attempt) now; true if that makes more than
 * max_restarts within the period (the one that would be too many is not
 * recorded: the supervisor gives up). Entries older than the period are
 * dropped first, so the ring never holds more than max_restarts of them.
 */
static bool sup_intensity_exceeded(struct tr_supervisor *s)
{
	uint64_t now = sup_now_ns();

	while (s->ring_len) {
		uint64_t t = s->ring[s->ring_head];
		if (now - t < s->period_ns)
			break;
		s->ring_head = (s->ring_head + 1) % s->ring_cap;
		s->ring_len--;
	}
	if (s->ring_len >= s->max_restarts)
		return true; /* this one would be restart max_restarts + 1 */
	if (s->ring_len == s->ring_cap) {
		size_t cap = s->ring_cap ? s->ring_cap * 2 : 8;
		uint64_t *r;

		if (cap > (size_t)s->max_restarts)
			cap = s->max_restarts;
		r = malloc(cap * sizeof(*r));
		if (!r)
			return true; /* cannot keep count: giving up is the safe side */
		for (size_t k = 0; k < s->ring_len; k++)
			r[k] = s->ring[(s->ring_head + k) % s->ring_cap];
		free(s->ring);
		s->ring = r;
		s->ring_cap = cap;
		s->ring_head = 0;
	}
	s->ring[(s->ring_head + s->ring_len) % s->ring_cap] = now;
	s->ring_len++;
	return false;
}

/* Stops a running child on purpose; its DOWN then only advances the state
 * machine. */
static void sup_stop_child(struct tr_supervisor *s, struct sup_child *c)
{
	int rc = tr_stop(c->ref);

	sup_publish(c, TR_REF_NONE);
	/* TR_EDEAD: it is already gone and its DOWN is on the way. Any other
	 * error (system shutting down, out of memory) means no DOWN may come:
	 * do not wait for it; the cleanup hook tries tr_stop again. */
	if (rc == TR_OK || rc == TR_EDEAD) {
		c->status = SUP_STOPPING;
		s->nstopping++;
	} else {
		c->status = SUP_DONE;
	}
}

/*
 * Starts a child: run its start function, then monitor the new actor, and
 * only then publish the reference, so whoever reads it with
 * tr_supervisor_child sends to a child whose stop the supervisor will see.
 * Returns TR_OK or why the start failed (non-zero start results other than
 * negative TR_E* codes become TR_EFAILED).
 */
static int sup_start_child(struct tr_supervisor *s, struct sup_child *c)
{
	tr_ref r = TR_REF_NONE;
	int rc = c->spec.start(s->sys, c->spec.arg, &r);

	if (rc != 0)
		return rc < 0 ? rc : TR_EFAILED;
	if (tr_ref_is_none(r))
		return TR_EINVAL; /* claimed success but named no actor */
	rc = tr_monitor(r);
	if (rc != TR_OK) {
		(void)tr_stop(r); /* unwatched: do not leave it running */
		return rc;
	}
	/* A named child is (re)bound on every start: the previous
	 * incarnation's binding died with it. */
	if (c->spec.name && (rc = tr_register(s->sys, c->spec.name, r)) != TR_OK) {
		(void)tr_stop(r);
		return rc;
	}
	c->ref = r;
	c->status = SUP_RUNNING;
	sup_publish(c, r);
	return TR_OK;
}

/* Intensity exceeded: stop every live child and fail once they are down. */
static void sup_give_up(struct tr_supervisor *s)
{
	s->giving_up = true;
	atomic_store_explicit(&s->escalations, 1, memory_order_release);
	for (size_t i = 0; i < s->n; i++) {
		struct sup_child *c = &s->kids[i];

		if (c->status == SUP_RUNNING)
			sup_stop_child(s, c);
		else if (c->status == SUP_PENDING)
			c->status = SUP_DONE;
	}
}

static void sup_queue_retry(struct tr_supervisor *s)
{
	if (s->retry_queued)
		return;
	/* Through the mailbox rather than a loop here, so that DOWNs already
	 * queued are handled between attempts. Unbounded mailbox: only a
	 * shutting-down system refuses it, and then nothing is to be retried. */
	if (tr_send(tr_self(), SUP_MSG_RETRY, NULL, 0) == TR_OK)
		s->retry_queued = true;
}

/*
 * Moves the state machine on after any event. Returns the behaviour's
 * result: TR_ESUPERVISOR once the supervisor gave up and every child it
 * stopped is down, else 0.
 */
static int sup_advance(struct tr_supervisor *s)
{
	if (s->giving_up)
		return s->nstopping ? 0 : TR_ESUPERVISOR;
	if (s->nstopping)
		return 0; /* a group restart waits for all its members */
	for (size_t i = 0; i < s->n; i++) {
		struct sup_child *c = &s->kids[i];
		int rc;

		if (c->status != SUP_PENDING)
			continue;
		rc = sup_start_child(s, c);
		if (rc == TR_OK) {
			atomic_fetch_add_explicit(&s->restarts, 1, memory_order_release);
			continue;
		}
		if (rc == TR_ESHUTDOWN) {
			/* the system is going down: nothing can be started again */
			c->status = SUP_DONE;
			continue;
		}
		/* A failed start is one more restart attempt. Later children
		 * wait for it: group strategies restart in order. */
		if (sup_intensity_exceeded(s)) {
			sup_give_up(s);
			return s->nstopping ? 0 : TR_ESUPERVISOR;
		}
		sup_queue_retry(s);
		return 0;
	}
	return 0;
}

static bool sup_should_restart(const struct sup_child *c, int reason)
{
	if (c->spec.restart == TR_TEMPORARY)
		return false;
	if (reason == TR_ESHUTDOWN)
		return false; /* the whole system is stopping */
	return !(c->spec.restart == TR_TRANSIENT && reason == TR_OK);
}

static int sup_on_down(struct tr_supervisor *s, const tr_down *d)
{
	struct sup_child *c = NULL;
	size_t i;
	int rc;

	for (i = 0; i < s->n; i++) {
		if (!tr_ref_is_none(s->kids[i].ref) && tr_ref_eq(s->kids[i].ref, d->who)) {
			c = &s->kids[i];
			break;
		}
	}
	if (!c)
		return 0; /* not a current child (or not ours): nothing to do */
	c->ref = TR_REF_NONE;
	sup_publish(c, TR_REF_NONE);
	if (c->status == SUP_STOPPING) {
		/* stopped on purpose: whatever the reason, it only joins the
		 * group restart (or the give-up) in progress */
		s->nstopping--;
		c->status = (s->giving_up || c->spec.restart == TR_TEMPORARY) ? SUP_DONE
									      : SUP_PENDING;
	} else if (c->status != SUP_RUNNING) {
		/* a child it could not ask to stop (sup_stop_child): written off */
		c->status = SUP_DONE;
	} else if (!sup_should_restart(c, d->reason)) {
		c->status = SUP_DONE;
	} else {
		c->status = SUP_PENDING;
		if (sup_intensity_exceeded(s)) {
			sup_give_up(s);
		} else if (s->strategy != TR_ONE_FOR_ONE) {
			size_t from = s->strategy == TR_ONE_FOR_ALL ? 0 : i + 1;

			for (size_t j = from; j < s->n; j++)
				if (s->kids[j].status == SUP_RUNNING)
					sup_stop_child(s, &s->kids[j]);
		}
	}
	rc = sup_advance(s);
	/* Counted once handled, so a reader that sees the count also sees the
	 * restarts this DOWN caused at once (one_for_one). */
	atomic_fetch_add_explicit(&s->child_exits, 1, memory_order_release);
	return rc;
}

/* ---------------------------------------------------------------- hooks */

static int sup_behaviour(void *state, tr_msg *m)
{
	struct tr_supervisor *s = state;
	const tr_down *d = tr_msg_down(m);

	if (d && tr_msg_type(m) == TR_MSG_DOWN)
		return sup_on_down(s, d);
	if (tr_msg_type(m) == SUP_MSG_RETRY && tr_ref_eq(tr_msg_sender(m), tr_self())) {
		s->retry_queued = false;
		return sup_advance(s);
	}
	return 0; /* anything else is not for a supervisor: ignored */
}

/* Starts the children in order. A child that fails its first start fails
 * the supervisor: the ones already started are stopped again. */
static int sup_init(void *state)
{
	struct tr_supervisor *s = state;

	for (size_t i = 0; i < s->n; i++) {
		int rc = sup_start_child(s, &s->kids[i]);

		if (rc == TR_OK)
			continue;
		while (i-- > 0) {
			struct sup_child *c = &s->kids[i];

			(void)tr_demonitor(c->ref);
			(void)tr_stop(c->ref);
			c->ref = TR_REF_NONE;
			sup_publish(c, TR_REF_NONE);
		}
		return rc;
	}
	return TR_OK;
}

/* Any reason, TR_ESHUTDOWN included: the children must not outlive their
 * supervisor. Their DOWNs then go to a stopped actor and are dropped. */
static void sup_cleanup(void *state, int reason)
{
	struct tr_supervisor *s = state;

	(void)reason;
	for (size_t i = 0; i < s->n; i++) {
		struct sup_child *c = &s->kids[i];

		if (!tr_ref_is_none(c->ref))
			(void)tr_stop(c->ref);
		c->ref = TR_REF_NONE;
		sup_publish(c, TR_REF_NONE);
	}
	sup_put(s);
}

/* ------------------------------------------------------------ public API */

static int sup_check_opts(const tr_sup_opts *o)
{
	if (o->strategy != TR_ONE_FOR_ONE && o->strategy != TR_ONE_FOR_ALL &&
	    o->strategy != TR_REST_FOR_ONE)
		return TR_EINVAL;
	if (o->nchildren && !o->children)
		return TR_EINVAL;
	if (o->max_restarts && !o->period_ms)
		return TR_EINVAL; /* "n restarts within no time" means nothing */
	for (size_t i = 0; i < o->nchildren; i++) {
		const tr_child_spec *c = &o->children[i];

		if (!c->start)
			return TR_EINVAL;
		if (c->restart != TR_PERMANENT && c->restart != TR_TRANSIENT &&
		    c->restart != TR_TEMPORARY)
			return TR_EINVAL;
	}
	return TR_OK;
}

int tr_supervisor_start(tr_system *sys, const tr_sup_opts *opts, tr_ref *out,
			tr_supervisor **handle)
{
	tr_actor_opts ao = {
		.behaviour = sup_behaviour,
		.init = sup_init,
		.cleanup = sup_cleanup,
		/* DOWNs bypass bounds anyway; unbounded keeps the retry note too */
		.mailbox_capacity = TR_MAILBOX_UNBOUNDED,
	};
	struct tr_supervisor *s;
	tr_ref r;
	int rc;

	if (!sys || !opts || !out)
		return TR_EINVAL;
	rc = sup_check_opts(opts);
	if (rc != TR_OK)
		return rc;
	s = calloc(1, sizeof(*s));
	if (!s)
		return TR_ENOMEM;
	s->sys = sys;
	s->strategy = opts->strategy;
	if (opts->max_restarts == 0 && opts->period_ms == 0) {
		s->max_restarts = SUP_DEFAULT_MAX_RESTARTS;
		s->period_ns = (uint64_t)SUP_DEFAULT_PERIOD_MS * 1000000u;
	} else {
		s->max_restarts = opts->max_restarts;
		s->period_ns = (uint64_t)opts->period_ms * 1000000u;
	}
	s->n = opts->nchildren;
	if (s->n) {
		s->kids = calloc(s->n, sizeof(*s->kids));
		if (!s->kids) {
			sup_free(s);
			return TR_ENOMEM;
		}
	}
	for (size_t i = 0; i < s->n; i++) {
		struct sup_child *c = &s->kids[i];
		const char *name = opts->children[i].name;

		c->spec = opts->children[i];
		c->spec.name = NULL;
		c->status = SUP_DONE;
		atomic_init(&c->cur, 0);
		if (name) {
			size_t len = strlen(name) + 1;
			char *copy = malloc(len);

			if (!copy) {
				sup_free(s);
				return TR_ENOMEM;
			}
			memcpy(copy, name, len);
			c->spec.name = copy;
		}
	}
	atomic_init(&s->refs, handle ? 2u : 1u);
	ao.state = s;

	rc = tr_spawn_opts(sys, &ao, &r);
	if (rc != TR_OK) {
		/* no cleanup hook ran: the actor's reference is ours to drop;
		 * a failing init already stopped the children it started */
		sup_free(s);
		return rc;
	}
	/* Without a handle the actor may already have stopped and freed `s`. */
	*out = r;
	if (handle)
		*handle = s;
	return TR_OK;
}

tr_ref tr_supervisor_child(tr_supervisor *s, size_t i)
{
	if (!s || i >= s->n)
		return TR_REF_NONE;
	return (tr_ref){atomic_load_explicit(&s->kids[i].cur, memory_order_acquire)};
}

int tr_supervisor_stats(tr_supervisor *s, tr_sup_stats *out)
{
	if (!s || !out)
		return TR_EINVAL;
	out->restarts = atomic_load_explicit(&s->restarts, memory_order_acquire);
	out->child_exits = atomic_load_explicit(&s->child_exits, memory_order_acquire);
	out->escalations = atomic_load_explicit(&s->escalations, memory_order_acquire);
	return TR_OK;
}

void tr_supervisor_release(tr_supervisor **s)
{
	if (!s || !*s)
		return;
	sup_put(*s);
	*s = NULL;
}
