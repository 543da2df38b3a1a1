/*
 * troupe: the actor system.
 *
 * A system owns a fixed pool of worker threads that run its actors, the
 * actors' records, message memory and counters. Several independent systems
 * can live in one process (at most TR_SYSTEMS_MAX at once).
 *
 * Life cycle: tr_system_new -> tr_system_start -> (spawn, send, ...) ->
 * tr_system_shutdown -> tr_system_destroy. Actors may be spawned before
 * start; messages are accepted only while the system runs.
 */
#ifndef TROUPE_SYSTEM_H
#define TROUPE_SYSTEM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TR_SYSTEMS_MAX 255u
#define TR_WORKERS_MAX 256u
/* An actor's run ends when its mailbox is empty, after `batch` messages, or
 * after `slice_us` microseconds (checked every TR_SLICE_CHECK messages),
 * whichever comes first. The slice is what keeps a busy actor from holding
 * its worker; the count is only a backstop, high so that a receiver fed by
 * several fast senders drains their bursts in one run. */
#define TR_BATCH_DEFAULT 10000u
#define TR_SLICE_DEFAULT_US 100u
#define TR_SLICE_CHECK 16u
/* Largest number of actors one system holds at once (24-bit actor slot). */
#define TR_ACTORS_MAX (1u << 24)

typedef struct tr_system tr_system;

/* What a bounded mailbox does with a message that does not fit. */
typedef enum tr_overflow {
	TR_OVERFLOW_REJECT = 0, /* tr_send returns TR_EFULL at once */
	TR_OVERFLOW_WAIT = 1,   /* non-worker senders wait up to overflow_wait_ms,
	                           then TR_ETIMEDOUT; worker senders never block
	                           and get TR_EFULL */
} tr_overflow;

typedef enum tr_shutdown_mode {
	/* Stop accepting messages, deliver every accepted one, then stop the
	 * actors (cleanup hooks run with reason TR_ESHUTDOWN) and join workers. */
	TR_SHUTDOWN_GRACEFUL = 0,
	/* Stop accepting messages and stop every actor after the message it is
	 * processing; messages still queued are destroyed and counted as
	 * undelivered dead letters. */
	TR_SHUTDOWN_IMMEDIATE = 1,
} tr_shutdown_mode;

typedef struct tr_config {
	unsigned workers;          /* 0: the CPUs this process may run on (affinity mask) */
	unsigned batch;            /* most messages per actor run; 0: TR_BATCH_DEFAULT */
	uint32_t mailbox_capacity; /* default bound for new actors; 0: unbounded */
	tr_overflow overflow;      /* default policy for bounded mailboxes */
	uint32_t overflow_wait_ms; /* default wait for TR_OVERFLOW_WAIT */
	unsigned spin_us;          /* idle spin before a worker parks; 0: 50 us */
	uint32_t ask_timeout_ms;   /* default request timeout; 0: 5000 ms */
	unsigned slice_us;         /* longest actor run; 0: TR_SLICE_DEFAULT_US */
} tr_config;

/* Counters of a whole system. Cheap to keep (per worker, summed when read). */
typedef struct tr_stats {
	uint64_t sent;           /* user messages accepted into a mailbox */
	uint64_t delivered;      /* user messages handed to a behaviour */
	uint64_t undelivered;    /* accepted, then destroyed unread (receiver stopped
	                            or immediate shutdown) */
	uint64_t dead_letters;   /* undelivered + sends refused because the receiver
	                            was stale/stopped or the system shutting down */
	uint64_t rejected_full;  /* sends refused by a full bounded mailbox */
	uint64_t spawned;        /* actors spawned */
	uint64_t stopped;        /* actors stopped (cleanup ran) */
	uint64_t alive;          /* spawned - stopped */
	uint64_t late_replies;   /* replies that came after their request's outcome */
	uint64_t timers_fired;   /* timer messages sent */
} tr_stats;

/* Counters of one worker thread. */
typedef struct tr_worker_stats {
	uint64_t runs;    /* actor runs (one run handles up to `batch` messages) */
	uint64_t steals;  /* actors taken from another worker's run queue */
	uint64_t parks;   /* times the worker went to sleep for lack of work */
	uint64_t wakeups; /* times it was woken from that sleep */
} tr_worker_stats;

/*
 * tr_config_init: fill `cfg` with the defaults. Thread-safe, wait-free.
 * Returns TR_OK, or TR_EINVAL if cfg is NULL.
 */
int tr_config_init(tr_config *cfg);

/*
 * tr_system_new: create a system (not yet started) from `cfg` (NULL: the
 * defaults). Thread-safe, blocking (allocates, takes the process-wide
 * system-table lock). On TR_OK stores the new system in *out.
 * Errors: TR_EINVAL (out NULL, workers > TR_WORKERS_MAX), TR_ENOMEM,
 * TR_ELIMIT (TR_SYSTEMS_MAX systems alive).
 */
int tr_system_new(const tr_config *cfg, tr_system **out);

/*
 * tr_system_start: start the worker threads. Thread-safe, blocking.
 * Errors: TR_EINVAL (NULL), TR_ESTATE (already started or shut down),
 * TR_ENOMEM (a thread could not be created; the system stays unstarted).
 */
int tr_system_start(tr_system *sys);

/*
 * tr_system_shutdown: stop the system (see tr_shutdown_mode) and join its
 * workers. Must not be called from one of this system's own workers (an
 * actor of another system may call it; that worker blocks meanwhile).
 * Thread-safe (concurrent calls: the first one does the work,
 * later ones wait for it), blocking. A system that was never started is
 * shut down at once: its actors' cleanup hooks run on the calling thread.
 * Afterwards every accepted message was either delivered or counted in
 * `undelivered`; sends return TR_ESHUTDOWN.
 * Errors: TR_EINVAL (NULL or bad mode), TR_EWORKER (called by one of this
 * system's workers).
 */
int tr_system_shutdown(tr_system *sys, tr_shutdown_mode mode);

/*
 * tr_system_destroy: shut the system down gracefully if it still runs, free
 * everything it owns and set *sys_p to NULL. References into it become stale
 * (TR_EDEAD). Not thread-safe with other calls on the same system; blocking.
 * NULL or *sys_p NULL: no-op. Called from one of this system's own workers
 * it does nothing (it would wait for itself).
 */
void tr_system_destroy(tr_system **sys_p);

/* tr_system_workers: number of worker threads. Thread-safe, wait-free; 0 for NULL. */
unsigned tr_system_workers(const tr_system *sys);

/*
 * tr_system_stats: sum the system's counters into *out. Thread-safe,
 * wait-free; counters read while the system runs are a recent, not an
 * atomic, snapshot. Errors: TR_EINVAL.
 */
int tr_system_stats(const tr_system *sys, tr_stats *out);

/*
 * tr_system_worker_stats: counters of worker `index`. Thread-safe,
 * wait-free. Errors: TR_EINVAL (NULL, index out of range).
 */
int tr_system_worker_stats(const tr_system *sys, unsigned index, tr_worker_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_SYSTEM_H */
