/*
 * troupe: actors.
 *
 * An actor is a behaviour function, a pointer to user state and a mailbox.
 * The runtime runs at most one message of an actor at a time, so the state
 * needs no locks; consecutive messages may run on different worker threads,
 * with every write of one run visible to the next.
 */
#ifndef TROUPE_ACTOR_H
#define TROUPE_ACTOR_H

#include <stdint.h>

#include "troupe/message.h"
#include "troupe/ref.h"
#include "troupe/system.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A behaviour handles one message. Return 0 to go on; any other value makes
 * the actor fail: it stops after this message and its cleanup hook gets that
 * value as the reason. The message and its inline payload are valid only
 * until the behaviour returns; take a pointer payload with tr_msg_take().
 */
typedef int (*tr_behaviour)(void *state, tr_msg *msg);

/* Runs inside tr_spawn, on the spawning thread, before the reference is
 * returned; tr_self() names the new actor. Non-zero fails the spawn. */
typedef int (*tr_init_fn)(void *state);

/* Runs exactly once when the actor stops, on the worker that stops it (or the
 * thread shutting down a never-started system). tr_self() still names the
 * actor; sends to it already fail with TR_EDEAD. `reason`: TR_OK for a normal
 * stop (tr_stop, tr_stop_self), TR_ESHUTDOWN when the system shut it down,
 * else the failure code its behaviour returned. The runtime never frees
 * `state`; this hook may. */
typedef void (*tr_cleanup_fn)(void *state, int reason);

/* Mailbox capacity meaning "unbounded even if the system default is bounded". */
#define TR_MAILBOX_UNBOUNDED UINT32_MAX

typedef struct tr_actor_opts {
	tr_behaviour behaviour;    /* required */
	void *state;               /* user state, passed to every hook */
	tr_init_fn init;           /* optional */
	tr_cleanup_fn cleanup;     /* optional */
	uint32_t mailbox_capacity; /* 0: system default; TR_MAILBOX_UNBOUNDED. Counts
	                              user messages waiting, not the one being handled */
	tr_overflow overflow;      /* used when mailbox_capacity is set here */
	uint32_t overflow_wait_ms; /* used when mailbox_capacity is set here */
	unsigned worker;           /* 0: any worker; k: pinned to worker k - 1 (it
	                              always runs there and is never stolen) */
} tr_actor_opts;

/*
 * tr_spawn_opts: create an actor in `sys` and store its reference in *out.
 * Thread-safe (any thread, actors included); lock-free in steady state,
 * blocking when it must grow the actor table (a cold-path lock). Allowed
 * before tr_system_start.
 * Errors: TR_EINVAL (NULL sys/opts/out/behaviour, capacity above 2^31,
 * worker above tr_system_workers),
 * TR_ESHUTDOWN, TR_ELIMIT (TR_ACTORS_MAX actors alive), TR_ENOMEM, or the
 * non-zero value the init hook returned (the actor is then discarded without
 * running cleanup).
 */
int tr_spawn_opts(tr_system *sys, const tr_actor_opts *opts, tr_ref *out);

/* tr_spawn: tr_spawn_opts with only a behaviour and state. Same contract. */
int tr_spawn(tr_system *sys, tr_behaviour behaviour, void *state, tr_ref *out);

/*
 * tr_stop: ask actor `ref` to stop. The request is queued behind the messages
 * already in its mailbox (they are delivered first); messages arriving after
 * it are undelivered dead letters. Runtime messages are never bound by the
 * mailbox capacity, and are accepted before tr_system_start (they take
 * effect once the system runs). Thread-safe, lock-free.
 * Errors: TR_EDEAD (stale or already stopped; not a dead letter),
 * TR_ESHUTDOWN, TR_EINVAL (TR_REF_NONE).
 */
int tr_stop(tr_ref ref);

/*
 * tr_stop_self: stop the calling actor once its current message returns; the
 * cleanup hook gets `reason` (TR_OK for a normal stop). Messages still queued
 * become undelivered dead letters. The first stop request wins; in a cleanup
 * hook it is a no-op returning TR_OK. Wait-free.
 * Errors: TR_ENOTACTOR outside a behaviour, init or cleanup hook.
 */
int tr_stop_self(int reason);

/*
 * tr_flush: publish now the messages the calling actor has sent that its
 * worker still holds (see tr_send), and let other workers run the actors
 * they woke. Only needed by a behaviour that is about to block on something
 * outside troupe (a lock, a condition variable) until a receiver reacts;
 * troupe's own blocking calls (tr_future_wait...) do it themselves.
 * Lock-free. Errors: TR_ENOTACTOR outside a behaviour, init or cleanup hook.
 */
int tr_flush(void);

/* tr_self: the calling actor's reference; TR_REF_NONE outside actors. Wait-free. */
tr_ref tr_self(void);

/* tr_self_system: the system of the calling actor or worker; NULL elsewhere. Wait-free. */
tr_system *tr_self_system(void);

/* tr_self_worker: index of the calling worker thread (0-based); -1 on a
 * thread that is not a worker. Wait-free. */
int tr_self_worker(void);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_ACTOR_H */
