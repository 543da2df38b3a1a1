/*
 * troupe internals shared by the runtime's files (tr__ names).
 */
#ifndef TR_INTERNAL_H
#define TR_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "troupe.h"

#include "mpsc.h"
#include "msgpool.h"
#include "outbox.h"
#include "rcu.h"
#include "runq.h"

#define TR__CHUNK_BITS 10u /* actor records per chunk: 1024 (128 KiB) */
#define TR__CHUNK_SIZE (1u << TR__CHUNK_BITS)
#define TR__NCHUNKS (TR_ACTORS_MAX / TR__CHUNK_SIZE)
#define TR__CHUNK_BYTES (TR__CHUNK_SIZE * sizeof(tr__actor))
#define TR__IDX_CACHE 64u   /* free actor slots a worker keeps */
#define TR__DEAD_BATCH 64u  /* dead actors per call_rcu */
#define TR__LIFO_STREAK 3u  /* consecutive next-slot runs while others wait */
#define TR__INJECT_EVERY 61u /* scheduling ticks between inject-queue checks */
#define TR__STEAL_MAX 64u    /* actors one steal takes at most */

/* ---- actor references: system slot (8) | generation (32) | actor slot (24) ---- */
static inline uint64_t tr__ref_make(unsigned sys_slot, uint32_t gen, uint32_t idx)
{
	return ((uint64_t)sys_slot << 56) | ((uint64_t)gen << 24) | idx;
}
static inline unsigned tr__ref_sys(uint64_t id) { return (unsigned)(id >> 56); }
static inline uint32_t tr__ref_idx(uint64_t id) { return (uint32_t)(id & (TR_ACTORS_MAX - 1)); }

/* ---- actor record ---- */
enum { TR__A_STOPPING = 1u };

/* Runtime message kinds (the `type` of a TR_MSG_F_SYSTEM message). */
enum {
	TR__SYS_STOP = 1u,    /* payload: int reason */
	TR__SYS_KILL,         /* wakes a killed actor; the flag does the rest */
	TR__SYS_ASK_DONE,     /* corr: request; payload: int status (no reply) */
	TR__SYS_ASK_TICK,     /* a request deadline may have passed */
	TR__SYS_MONITOR,      /* sender watches the receiver */
	TR__SYS_DEMONITOR,
	TR__SYS_LINK,         /* sender linked itself to the receiver */
	TR__SYS_UNLINK,
	TR__SYS_EXIT,         /* link signal; payload: tr_down */
	TR__SYS_DOWN,         /* monitor notification; payload: tr_down */
};

/* Internal message flags. */
#define TR__MSG_F_FUTURE 0x0020u  /* the request came from a future (corr = its id) */
#define TR__MSG_F_REPLIED 0x0040u /* tr_reply answered this request */

struct tr__ext;

typedef struct tr__actor {
	/* Line 0: written and read by senders. */
	alignas(TR__CACHELINE) _Atomic(uintptr_t) mb_head;
	_Atomic uint64_t ident;   /* the tr_ref id while alive, 0 otherwise */
	tr__link mb_stub;
	tr__link run_link;        /* node in the inject queue */
	_Atomic uint32_t mb_count; /* user messages queued (bounded mailboxes) */
	uint32_t mb_capacity;      /* 0: unbounded */
	uint32_t overflow_wait_ms;
	uint8_t overflow;          /* tr_overflow */
	uint16_t home;             /* pinned to worker home - 1; 0: any worker */

	/* Line 1: only the thread running the actor (or reclaiming it). */
	alignas(TR__CACHELINE) tr__link *mb_tail;
	union {
		struct {
			tr_behaviour behaviour;
			void *state;
			tr_cleanup_fn cleanup;
		} live;
		struct {
			struct rcu_head rcu;
			struct tr__actor *next; /* dead batch */
			tr_system *sys;
		} dead;
		struct {
			uint32_t next; /* next free record: index + 1 */
		} free;
	} u;
	struct tr__ext *ext; /* requests, monitors, links; NULL until first used */
	uint32_t idx; /* constant: slot number */
	uint32_t gen; /* generation of the current (or, once reset, next) incarnation */
	uint16_t flags;
	/* tr_kill: stop before the next message. Read before every message, so
	 * it lives on the owner's line, not on the line senders keep writing. */
	_Atomic uint8_t killed;
	int32_t stop_reason;
} tr__actor;

static inline tr__mpsc_ends tr__mbox(tr__actor *a)
{
	return (tr__mpsc_ends){&a->mb_head, &a->mb_tail, &a->mb_stub};
}

/* ---- counters: kept per worker with plain relaxed stores, summed on read ---- */
enum {
	TR__C_SENT,
	TR__C_DELIVERED,
	TR__C_UNDELIVERED,
	TR__C_DEAD_LETTERS,
	TR__C_REJECTED_FULL,
	TR__C_SPAWNED,
	TR__C_STOPPED,
	TR__C_RUNS,
	TR__C_STEALS,
	TR__C_PARKS,
	TR__C_WAKEUPS,
	TR__C_LATE_REPLIES,
	TR__C_TIMERS_FIRED,
	TR__C_COUNT
};

typedef struct tr__counters {
	alignas(TR__CACHELINE) _Atomic uint64_t c[TR__C_COUNT];
} tr__counters;

/* ---- worker ---- */
typedef struct tr__worker {
	tr__ring ring; /* shared with thieves */
	tr__inject pinned; /* actors pinned here; only this worker consumes */
	alignas(TR__CACHELINE) _Atomic uint32_t sleep; /* 1 while parked; futex word */

	/* owner only */
	alignas(TR__CACHELINE) tr_system *sys;
	tr__actor *next_slot; /* actor woken by this worker's last send: runs next */
	unsigned streak;
	unsigned tick;
	uint32_t rng;
	unsigned index;
	tr__actor *dead;      /* stopped actors waiting for one call_rcu */
	unsigned ndead;
	unsigned nidx;
	uint32_t idx_cache[TR__IDX_CACHE];
	tr__mcache cache;
	pthread_t thread;
	tr__outbox out;

	tr__counters ctr;
} tr__worker;

/* ---- system ---- */
enum {
	TR__S_CREATED,
	TR__S_RUNNING,
	TR__S_DRAINING, /* shutdown began: sends and spawns refused */
	TR__S_STOPPING, /* actors stopped: workers exit when idle */
	TR__S_DONE
};

struct tr_system {
	uint64_t uid; /* process-unique, never reused */
	unsigned slot;
	unsigned nworkers;
	tr_config cfg;
	uint32_t gen_seed;
	tr__worker *workers;
	struct call_rcu_data *crdp;

	alignas(TR__CACHELINE) _Atomic int state;
	_Atomic bool abort; /* immediate shutdown: stop actors without delivering */
	_Atomic uint32_t parked;
	_Atomic uint32_t searching;
	_Atomic uint32_t mb_waiters; /* senders blocked on full mailboxes */
	_Atomic unsigned wake_rr;

	tr__inject inject;
	tr__msgpool pool;
	tr__counters ext; /* counters of threads that are not workers (atomic adds) */

	/* actor table: chunks are published once and live until destroy */
	alignas(TR__CACHELINE) pthread_mutex_t table_mu;
	uint32_t next_fresh; /* never-used slots start here */
	uint32_t free_head; /* free records, linked through u.free.next: index + 1 */
	_Atomic(tr__actor *) *chunks; /* TR__NCHUNKS entries */

	pthread_mutex_t shutdown_mu;

	struct tr__timers *timers;   /* timer service (timer.c) */
	struct tr__futures *futures; /* future slots (future.c) */
	struct cds_lfht *names;      /* registry (registry.c) */
	struct cds_lfht *channels;   /* channels by name (channel.c) */
	struct tr__subs *_Atomic patterns; /* pattern subscriptions (channel.c) */
	pthread_mutex_t pattern_mu;
};

/* ---- per-thread context ---- */
typedef struct tr__tls {
	tr__worker *worker; /* set on worker threads */
	tr__actor *actor;   /* actor whose behaviour or init is running */
	tr_system *sys;     /* system of `actor` (init may run off-worker) */
	uint64_t self;      /* ident of `actor` */
	tr_msg *msg;        /* the message its behaviour is handling */
	/* message cache of a thread that is not a worker of the system it sends to */
	uint64_t xuid;   /* uid of the system the cache holds blocks of; 0: none */
	unsigned xslot;  /* its table slot (the system itself may be gone) */
	tr__mcache xcache;
} tr__tls;

extern _Thread_local tr__tls tr__ctx;

/* worker of `sys` on this thread, or NULL */
static inline tr__worker *tr__my_worker(const tr_system *sys)
{
	tr__worker *w = tr__ctx.worker;
	return (w && w->sys == sys) ? w : NULL;
}

/* ---- system.c ---- */
tr_system *tr__system_lookup(unsigned slot); /* inside an RCU read-side section */
uint64_t tr__counter_sum(const tr_system *sys, unsigned counter);

/* Workers bump their own counters with a plain load and store (no RMW on a
 * shared line); other threads add atomically to the system's `ext` set. */
static inline void tr__count(tr_system *sys, unsigned counter, int64_t n)
{
	tr__worker *w = tr__my_worker(sys);

	if (w) {
		_Atomic uint64_t *p = &w->ctr.c[counter];
		atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + (uint64_t)n,
				      memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&sys->ext.c[counter], (uint64_t)n, memory_order_relaxed);
	}
}

static inline tr__actor *tr__actor_at(tr_system *sys, uint32_t idx)
{
	tr__actor *chunk = atomic_load_explicit(&sys->chunks[idx >> TR__CHUNK_BITS],
						memory_order_acquire);
	return chunk ? &chunk[idx & (TR__CHUNK_SIZE - 1)] : NULL;
}

/* ---- actor.c ---- */
tr_msg *tr__msg_alloc(tr_system *sys, unsigned cls);
void tr__msg_free(tr_system *sys, tr_msg *m); /* into the calling thread's cache */
/* Destroys a message accepted for actor `self` (stopped with `reason`) that
 * will never be delivered: counts a user message as an undelivered dead
 * letter, answers requests, monitors and links. */
void tr__msg_discard_to(tr_system *sys, tr__mcache *mc, uint64_t self, int reason, tr_msg *m);
/* Resolves a reference to a live actor; inside a read-side section.
 * `user`: count refusals as dead letters; `any_state`: accept a system
 * that is not running (runtime messages during shutdown). */
int tr__resolve(uint64_t id, bool user, bool any_state, tr_system **sys, tr__actor **a);
/* Builds a message and pushes it (scheduling the actor if it was idle).
 * Inside a read-side section, `a` resolved. No bound, no counting. */
int tr__post(tr_system *sys, tr__actor *a, uint16_t flags, uint32_t type, uint64_t corr,
	     const void *data, size_t size);
/* Sends a runtime message to `to` from the calling actor (or nobody).
 * Returns TR_EDEAD if `to` is gone. Lock-free. */
int tr__send_sys(uint64_t to, uint32_t kind, uint64_t corr, const void *data, size_t size);
/* The full user send path: validate, admit, post, count. */
int tr__send_msg(uint64_t id, uint16_t flags, uint64_t corr, uint32_t type, const void *data,
		 size_t size, void *ptr, tr_dtor dtor);
uint64_t tr__now_ns(void);
/* now + delay without wrapping: a huge timeout means "never". */
static inline uint64_t tr__deadline(uint64_t now, uint64_t delay)
{
	return delay > UINT64_MAX - now ? UINT64_MAX : now + delay;
}
/* Takes a slot in a bounded mailbox; never blocks. */
static inline bool tr__try_admit(tr__actor *a)
{
	uint32_t c = atomic_load_explicit(&a->mb_count, memory_order_relaxed);

	while (c < a->mb_capacity)
		if (atomic_compare_exchange_weak_explicit(&a->mb_count, &c, c + 1,
							  memory_order_relaxed,
							  memory_order_relaxed))
			return true;
	return false;
}
static inline uint64_t tr__actor_ref(tr_system *sys, const tr__actor *a)
{
	return tr__ref_make(sys->slot, a->gen, a->idx);
}
int tr__send_stop(tr_system *sys, tr__actor *a, int reason);
/* The running actor stops after its current message (first request wins). */
void tr__actor_request_stop(tr__actor *a, int reason);
/* Runs a batch; true if the actor must be rescheduled. */
bool tr__actor_run(tr__worker *w, tr__actor *a);
/* Stops every live actor of a never-started system on the calling thread. */
void tr__actor_stop_all_unstarted(tr_system *sys);
void tr__actor_flush_dead(tr__worker *w);

/* ---- ask.c / monitor.c: per-actor conversation state (owner only) ---- */
typedef struct tr__ext tr__ext;
tr__ext *tr__ext_get(tr__actor *a); /* allocates on first use; NULL on ENOMEM */
/* Runs a runtime message addressed to the running actor `a`. Returns the
 * behaviour-like result (non-zero: stop with it). May turn `m` into a
 * user-visible message and hand it to the behaviour. */
int tr__sys_dispatch(tr__worker *w, tr__actor *a, tr_msg *m);
/* A reply for the running actor `a`; consumes nothing (caller frees m). */
int tr__ask_on_reply(tr__worker *w, tr__actor *a, tr_msg *m);
/* The running actor handled request `m` without answering it: remember it
 * so that its stop can answer "receiver down". */
void tr__ask_keep_open(tr__actor *a, const tr_msg *m);
/* Answers the request at `to` with TR_EDEAD (receiver down). */
void tr__ask_down(tr_reply_addr to);
/* `a` stops with `reason`: tell watchers and links, drop pending requests,
 * free the state. `self` is its reference. */
void tr__ext_on_stop(tr_system *sys, tr__actor *a, uint64_t self, int reason);
/* A message found in a dead actor's mailbox (`self`, stopped with `reason`):
 * answers what must be answered (requests, monitors, links). */
void tr__ext_on_discard(tr_system *sys, tr_msg *m, uint64_t self, int reason);

/* ---- timer.c ---- */
int tr__timers_init(tr_system *sys);
int tr__timers_start(tr_system *sys);
void tr__timers_stop(tr_system *sys);
void tr__timers_free(tr_system *sys);
/* Arms a one-shot runtime timer that sends runtime message `kind` to
 * actor `to` (its corr carries the timer id). */
int tr__timer_sys_after(tr_system *sys, uint64_t to, uint64_t delay_ns, uint32_t kind,
			tr_timer *out);
/* Arms a one-shot timer that completes future `fid` with TR_ETIMEDOUT. */
int tr__timer_future_after(tr_system *sys, uint64_t fid, uint64_t delay_ns, tr_timer *out);
/* A timer message is about to be handled (or dropped): true if it is still
 * wanted (not cancelled); frees the timer of a one-shot. */
bool tr__timer_on_deliver(tr_system *sys, tr_msg *m);

/* ---- future.c ---- */
int tr__futures_init(tr_system *sys);
void tr__futures_free(tr_system *sys);
/* Completes future `fid` (inside a read-side section). Takes `reply` on
 * TR_OK; TR_EAGAIN if it was already complete (a late answer), TR_EDEAD
 * if the future is gone (destroyed, or its system). */
int tr__future_complete(uint64_t fid, int status, tr_msg *reply);

/* ---- registry.c / channel.c ---- */
int tr__registry_init(tr_system *sys);
void tr__registry_free(tr_system *sys);
int tr__channels_init(tr_system *sys);
void tr__channels_free(tr_system *sys);
uint64_t tr__hash_name(const char *name, size_t len);
/* Frees `head` with `fn` after a grace period: batched call_rcu on this
 * system's workers, a synchronous grace period elsewhere (cold paths).
 * Not inside a read-side section. */
void tr__defer_free(tr_system *sys, struct rcu_head *head, void (*fn)(struct rcu_head *));
/* Whether `id` names a live actor of `sys` (inside a read-side section). */
static inline bool tr__ref_alive(tr_system *sys, uint64_t id)
{
	tr__actor *a;
	if (tr__ref_sys(id) != sys->slot || !(a = tr__actor_at(sys, tr__ref_idx(id))))
		return false;
	return atomic_load_explicit(&a->ident, memory_order_acquire) == id;
}

/* ---- worker.c ---- */
void tr__schedule(tr_system *sys, tr__actor *a);
void tr__wake_all(tr_system *sys);
/* The calling thread may be a worker about to block inside a behaviour:
 * publishes what its outbox holds and moves the actor in its next slot to
 * its ring, where other workers can take it. Lock-free. */
void tr__worker_before_block(void);
void *tr__worker_main(void *arg);
int tr__futex_wait(_Atomic uint32_t *addr, uint32_t expect, int64_t timeout_ns);
void tr__futex_wake(_Atomic uint32_t *addr, int n);

#endif /* TR_INTERNAL_H */
