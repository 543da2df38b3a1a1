/*
 * troupe: supervisors (actors/supervisor.c).
 *
 * A supervisor is an actor that starts children from specifications,
 * monitors them, and restarts them when they stop, following a strategy:
 *  - TR_ONE_FOR_ONE: restart only the child that stopped;
 *  - TR_ONE_FOR_ALL: stop every other child, then restart all, in order;
 *  - TR_REST_FOR_ONE: stop the children started after it, then restart it
 *    and them, in order.
 * Restart intensity: if more than `max_restarts` restarts happen within
 * `period_ms`, the supervisor gives up: it stops its children and fails
 * with reason TR_ESUPERVISOR, which its own supervisor (or any monitor or
 * link) sees, so failure escalates up the tree.
 * A restarted child gets fresh state: its start function runs again.
 *
 * Details:
 *  - Whether a stopped child is restarted depends on its restart type and
 *    stop reason only; then the strategy says which others go with it. A
 *    child that is not restarted (temporary; transient stopped with TR_OK;
 *    any child stopped by a system shutdown, TR_ESHUTDOWN) stays down, and
 *    group restarts (one_for_all, rest_for_one) leave it down too; a
 *    temporary child that a group restart stops is not started again.
 *  - A group restart stops its members with tr_stop (queued behind their
 *    mailboxes), waits for every one's DOWN, then starts them in spec order.
 *  - Intensity counts restart decisions, not children: one DOWN that makes
 *    a one_for_all supervisor restart five children counts once. A start
 *    function that fails counts once more per attempt; the supervisor
 *    retries it (after the messages already queued) until it succeeds or
 *    the intensity is exceeded. Children after it in spec order wait.
 *  - Giving up: the supervisor stops every child, waits for their DOWNs,
 *    then fails with TR_ESUPERVISOR, so a monitor that sees it down knows
 *    its children are gone too.
 *  - When the supervisor stops for any other reason (tr_stop, a shutdown),
 *    its cleanup hook sends every live child a tr_stop and does not wait.
 *  - A child is monitored right after its start function returns; one that
 *    has already stopped by then is seen down with reason TR_EDEAD, which
 *    counts as a failure (a transient child with such a short life is
 *    restarted).
 *  - tr_supervisor_child publishes a child's reference only once it is
 *    monitored, and TR_REF_NONE from the moment its DOWN is handled (or it is
 *    asked to stop) until it runs again.
 *  - Messages other than its children's DOWNs sent to a supervisor are
 *    ignored.
 */
#ifndef TROUPE_SUPERVISOR_H
#define TROUPE_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>

#include "troupe/ref.h"
#include "troupe/system.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tr_restart {
	TR_PERMANENT = 0, /* always restarted */
	TR_TRANSIENT = 1, /* restarted unless it stopped with TR_OK */
	TR_TEMPORARY = 2, /* never restarted */
} tr_restart;

typedef enum tr_strategy {
	TR_ONE_FOR_ONE = 0,
	TR_ONE_FOR_ALL = 1,
	TR_REST_FOR_ONE = 2,
} tr_strategy;

/* Starts one child (spawning it with fresh state) and stores its reference.
 * Runs inside the supervisor (tr_self() is the supervisor), on its worker or,
 * for the first start, on the thread calling tr_supervisor_start. Non-zero:
 * the start failed (the supervisor counts it as a restart and retries within
 * its intensity); returning 0 with *out left TR_REF_NONE is a failure too. */
typedef int (*tr_child_start_fn)(tr_system *sys, void *arg, tr_ref *out);

typedef struct tr_child_spec {
	const char *name; /* NULL, or registered under this name (troupe/registry.h)
	                     on every start, so a restarted child is found again;
	                     a name held by another actor fails the start */
	tr_child_start_fn start;
	void *arg;
	tr_restart restart;
} tr_child_spec;

typedef struct tr_sup_opts {
	tr_strategy strategy;
	unsigned max_restarts; /* default 3 when both are 0; 0 with a period:
	                          the first restart gives up */
	uint32_t period_ms;    /* default 5000 when both are 0; must not be 0
	                          when max_restarts is not */
	const tr_child_spec *children; /* copied; started in order */
	size_t nchildren;
} tr_sup_opts;

/* Counters of one supervisor, readable from any thread. Each is bumped
 * after the event is fully handled: a reader that sees child_exits move also
 * sees the restarts that DOWN started at once (the child's new reference
 * included). */
typedef struct tr_sup_stats {
	uint64_t restarts;     /* children started again after a stop (a group
	                          restart of n children counts n) */
	uint64_t child_exits;  /* DOWN notifications from children, including
	                          those of children it stopped itself */
	uint64_t escalations;  /* 1 once it gave up */
} tr_sup_stats;

typedef struct tr_supervisor tr_supervisor;

/*
 * tr_supervisor_start: spawn a supervisor in `sys` that starts the children
 * in order; store its actor reference in *out and, if handle is not NULL, a
 * handle for tr_supervisor_child / tr_supervisor_stats in *handle (valid
 * until tr_supervisor_release, even after the supervisor stopped). The
 * children are started, in order and on the calling thread, before it
 * returns. Allowed before tr_system_start, like tr_spawn_opts: the children
 * then run, and are watched, once the system starts.
 * Thread-safe (any thread, actors included); blocking as tr_spawn_opts and
 * the children's start functions are. Zero children is allowed.
 * Errors: TR_EINVAL (NULL sys/opts/out, bad strategy or restart type, a
 * spec without start function, children NULL with nchildren > 0,
 * max_restarts > 0 with period_ms 0), TR_ENOMEM, those of tr_spawn_opts;
 * a child whose first start fails makes the supervisor fail at once: the
 * children started before it are stopped again (before tr_system_start,
 * tr_stop cannot reach them: they stop with the system) and its error is
 * returned (a positive one as TR_EFAILED).
 */
int tr_supervisor_start(tr_system *sys, const tr_sup_opts *opts, tr_ref *out,
			tr_supervisor **handle);

/* tr_supervisor_child: the current reference of child i (TR_REF_NONE while
 * it is down or being restarted, after the supervisor stopped, or for s NULL
 * or i out of range). A reference returned is already monitored, but may go
 * stale at any time. Any thread; wait-free. */
tr_ref tr_supervisor_child(tr_supervisor *s, size_t i);

/* tr_supervisor_stats: copy the counters into *out. Any thread; wait-free
 * (each counter read atomically, not the three as one snapshot).
 * Errors: TR_EINVAL (NULL s or out). */
int tr_supervisor_stats(tr_supervisor *s, tr_sup_stats *out);

/* tr_supervisor_release: drop the caller's handle (the supervisor actor
 * keeps running; its memory goes when both the handle and the actor are
 * gone). Sets *s to NULL; NULL or *s NULL: no-op. Any thread; lock-free. */
void tr_supervisor_release(tr_supervisor **s);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_SUPERVISOR_H */
