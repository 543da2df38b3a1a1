/*
 * Actor systems: creation, start, shutdown, destruction, counters, and the
 * process-wide table that lets a reference find its system (or learn that
 * the system is gone) without ever touching freed memory.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

#define TR__SYSTEM_SLOTS 256u

/* Readers: RCU. Writers: tr__systems_mu. */
static _Atomic(tr_system *) tr__systems[TR__SYSTEM_SLOTS];
static pthread_mutex_t tr__systems_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned tr__systems_next;
static unsigned tr__systems_alive;
static uint64_t tr__systems_uid;

tr_system *tr__system_lookup(unsigned slot)
{
	return atomic_load_explicit(&tr__systems[slot % TR__SYSTEM_SLOTS], memory_order_acquire);
}

uint64_t tr__counter_sum(const tr_system *sys, unsigned c)
{
	uint64_t sum = atomic_load_explicit(&sys->ext.c[c], memory_order_relaxed);

	for (unsigned i = 0; i < sys->nworkers; i++)
		sum += atomic_load_explicit(&sys->workers[i].ctr.c[c], memory_order_relaxed);
	return sum;
}

int tr_config_init(tr_config *cfg)
{
	if (!cfg)
		return TR_EINVAL;
	memset(cfg, 0, sizeof(*cfg));
	cfg->batch = TR_BATCH_DEFAULT;
	cfg->overflow = TR_OVERFLOW_REJECT;
	cfg->spin_us = 50;
	cfg->ask_timeout_ms = 5000;
	cfg->slice_us = TR_SLICE_DEFAULT_US;
	return TR_OK;
}

static unsigned tr__cpus_allowed(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return 1;
	n = CPU_COUNT(&set);
	return n > 0 ? (unsigned)n : 1;
}

/* Claims a table slot (round robin, so a slot is reused as late as possible). */
static int tr__system_register(tr_system *sys)
{
	int rc = TR_ELIMIT;

	pthread_mutex_lock(&tr__systems_mu);
	if (tr__systems_alive < TR_SYSTEMS_MAX) {
		for (unsigned i = 0; i < TR__SYSTEM_SLOTS; i++) {
			unsigned s = (tr__systems_next + i) % TR__SYSTEM_SLOTS;
			if (atomic_load_explicit(&tr__systems[s], memory_order_relaxed))
				continue;
			sys->slot = s;
			sys->uid = ++tr__systems_uid;
			sys->gen_seed = (uint32_t)((sys->uid * 0x9E3779B97F4A7C15ull) >> 32);
			tr__systems_next = s + 1;
			tr__systems_alive++;
			atomic_store_explicit(&tr__systems[s], sys, memory_order_release);
			rc = TR_OK;
			break;
		}
	}
	pthread_mutex_unlock(&tr__systems_mu);
	return rc;
}

void tr__defer_free(tr_system *sys, struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	if (tr__my_worker(sys)) {
		tr__rcu_call(head, fn); /* this worker's call_rcu thread: batched */
		return;
	}
	tr__rcu_synchronize();
	TR__HB_RELEASE(head); /* what tr__rcu_call would have said */
	fn(head);
}

static void tr__system_free(tr_system *sys)
{
	tr__registry_free(sys);
	tr__channels_free(sys);
	tr__timers_free(sys);
	tr__futures_free(sys);
	if (sys->chunks) {
		for (unsigned c = 0; c < TR__NCHUNKS; c++) {
			tr__actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_relaxed);
			if (chunk)
				munmap(chunk, TR__CHUNK_BYTES);
		}
		free(sys->chunks);
	}
	free(sys->workers);
	tr__msgpool_fini(&sys->pool);
	pthread_mutex_destroy(&sys->table_mu);
	pthread_mutex_destroy(&sys->shutdown_mu);
	pthread_mutex_destroy(&sys->pattern_mu);
	free(sys);
}

int tr_system_new(const tr_config *cfg, tr_system **out)
{
	tr_system *sys;
	tr_config c;
	int rc;

	if (!out)
		return TR_EINVAL;
	if (cfg)
		c = *cfg;
	else
		tr_config_init(&c);
	if (c.workers > TR_WORKERS_MAX || c.mailbox_capacity > (1u << 31) ||
	    (c.overflow != TR_OVERFLOW_REJECT && c.overflow != TR_OVERFLOW_WAIT))
		return TR_EINVAL;
	if (!c.workers)
		c.workers = tr__cpus_allowed() < TR_WORKERS_MAX ? tr__cpus_allowed() : TR_WORKERS_MAX;
	if (!c.batch)
		c.batch = TR_BATCH_DEFAULT;
	if (!c.spin_us)
		c.spin_us = 50;
	if (!c.ask_timeout_ms)
		c.ask_timeout_ms = 5000;
	if (!c.slice_us)
		c.slice_us = TR_SLICE_DEFAULT_US;

	sys = aligned_alloc(TR__CACHELINE, sizeof(*sys));
	if (!sys)
		return TR_ENOMEM;
	memset(sys, 0, sizeof(*sys));
	sys->cfg = c;
	sys->nworkers = c.workers;
	pthread_mutex_init(&sys->table_mu, NULL);
	pthread_mutex_init(&sys->shutdown_mu, NULL);
	pthread_mutex_init(&sys->pattern_mu, NULL);
	if (tr__msgpool_init(&sys->pool) != TR_OK) {
		pthread_mutex_destroy(&sys->table_mu);
		pthread_mutex_destroy(&sys->shutdown_mu);
		pthread_mutex_destroy(&sys->pattern_mu);
		free(sys);
		return TR_ENOMEM;
	}
	sys->workers = aligned_alloc(TR__CACHELINE, c.workers * sizeof(tr__worker));
	sys->chunks = calloc(TR__NCHUNKS, sizeof(*sys->chunks));
	if (!sys->workers || !sys->chunks) {
		tr__system_free(sys);
		return TR_ENOMEM;
	}
	memset(sys->workers, 0, c.workers * sizeof(tr__worker));
	for (unsigned i = 0; i < c.workers; i++) {
		tr__mpsc_init(tr__inject_ends(&sys->workers[i].pinned), false);
		sys->workers[i].sys = sys;
		sys->workers[i].index = i;
		sys->workers[i].rng = 2654435761u * (i + 1);
	}
	tr__mpsc_init(tr__inject_ends(&sys->inject), false);
	atomic_init(&sys->state, TR__S_CREATED);
	if (tr__timers_init(sys) != TR_OK || tr__futures_init(sys) != TR_OK ||
	    tr__registry_init(sys) != TR_OK || tr__channels_init(sys) != TR_OK) {
		tr__system_free(sys);
		return TR_ENOMEM;
	}
	rc = tr__system_register(sys);
	if (rc != TR_OK) {
		tr__system_free(sys);
		return rc;
	}
	*out = sys;
	return TR_OK;
}

unsigned tr_system_workers(const tr_system *sys) { return sys ? sys->nworkers : 0; }

static void tr__stop_workers(tr_system *sys, unsigned started)
{
	atomic_store_explicit(&sys->state, TR__S_STOPPING, memory_order_seq_cst);
	tr__wake_all(sys);
	for (unsigned i = 0; i < started; i++)
		pthread_join(sys->workers[i].thread, NULL);
}

int tr_system_start(tr_system *sys)
{
	int rc = TR_OK;
	unsigned i;

	if (!sys)
		return TR_EINVAL;
	pthread_mutex_lock(&sys->shutdown_mu);
	if (atomic_load_explicit(&sys->state, memory_order_relaxed) != TR__S_CREATED) {
		rc = TR_ESTATE;
		goto out;
	}
	sys->crdp = urcu_memb_create_call_rcu_data(0, -1);
	if (!sys->crdp) {
		rc = TR_ENOMEM;
		goto out;
	}
	for (i = 0; i < sys->nworkers; i++)
		if (pthread_create(&sys->workers[i].thread, NULL, tr__worker_main,
				   &sys->workers[i]) != 0)
			break;
	if (i < sys->nworkers || tr__timers_start(sys) != TR_OK) {
		tr__stop_workers(sys, i);
		atomic_store_explicit(&sys->state, TR__S_CREATED, memory_order_seq_cst);
		urcu_memb_call_rcu_data_free(sys->crdp);
		sys->crdp = NULL;
		rc = TR_ENOMEM;
		goto out;
	}
	atomic_store_explicit(&sys->state, TR__S_RUNNING, memory_order_seq_cst);
out:
	pthread_mutex_unlock(&sys->shutdown_mu);
	return rc;
}

/* Shutdown polls the alive count: it is a cold path, and polling keeps the
 * hot paths free of any "last one out" signalling. */
static void tr__nap(unsigned *round)
{
	struct timespec ts = {0, (*round < 20 ? 50 : 1000) * 1000L};
	(*round)++;
	nanosleep(&ts, NULL);
}

/* `stopped` first: every stopped actor was spawned before, so the later
 * `spawned` read cannot be smaller. */
static uint64_t tr__alive(const tr_system *sys)
{
	uint64_t stopped = tr__counter_sum(sys, TR__C_STOPPED);
	uint64_t spawned = tr__counter_sum(sys, TR__C_SPAWNED);
	return spawned > stopped ? spawned - stopped : 0;
}

/* Sends every live actor a stop request. */
static void tr__stop_everyone(tr_system *sys)
{
	for (uint32_t c = 0; c < TR__NCHUNKS; c++) {
		tr__actor *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
		if (!chunk)
			break;
		tr__rcu_read_lock();
		for (uint32_t i = 0; i < TR__CHUNK_SIZE; i++) {
			uint64_t id = atomic_load_explicit(&chunk[i].ident, memory_order_acquire);
			if (id)
				(void)tr__send_stop(sys, &chunk[i], TR_ESHUTDOWN);
		}
		tr__rcu_read_unlock();
	}
}

int tr_system_shutdown(tr_system *sys, tr_shutdown_mode mode)
{
	unsigned round = 0;
	int st;

	if (!sys || (mode != TR_SHUTDOWN_GRACEFUL && mode != TR_SHUTDOWN_IMMEDIATE))
		return TR_EINVAL;
	if (tr__my_worker(sys))
		return TR_EWORKER; /* it would wait for itself */
	pthread_mutex_lock(&sys->shutdown_mu);
	st = atomic_load_explicit(&sys->state, memory_order_relaxed);
	if (st == TR__S_DONE)
		goto out;
	atomic_store_explicit(&sys->state, TR__S_DRAINING, memory_order_seq_cst);
	/* After this grace period no send or spawn that saw the system
	 * running is still in flight, so the counters only move toward done.
	 * Only then may immediate mode stop actors: a sender that saw the
	 * system running must not find its target stopped by the shutdown
	 * (it would get TR_EDEAD instead of TR_ESHUTDOWN). */
	tr__rcu_synchronize();
	/* Sends a worker accepted but still holds (outbox.h) are not in
	 * flight by the grace period's measure: wait for them to go out, so
	 * that they still come before the stop requests. */
	if (st != TR__S_CREATED)
		for (unsigned i = 0; i < sys->nworkers; i++)
			tr__outbox_wait(&sys->workers[i]);
	atomic_store_explicit(&sys->abort, mode == TR_SHUTDOWN_IMMEDIATE, memory_order_relaxed);
	if (st == TR__S_CREATED) {
		tr__actor_stop_all_unstarted(sys);
	} else {
		/* Graceful needs no wait here: each stop request queues behind
		 * every message its actor accepted, and nothing new is accepted.
		 * Immediate mode makes actors stop at their next message. */
		tr__stop_everyone(sys);
		while (tr__alive(sys) > 0)
			tr__nap(&round);
		tr__stop_workers(sys, sys->nworkers);
		tr__timers_stop(sys);
		/* dead mailboxes are drained (and their letters counted) by
		 * call_rcu callbacks; wait for the last of them */
		tr__rcu_barrier();
	}
	atomic_store_explicit(&sys->state, TR__S_DONE, memory_order_seq_cst);
out:
	pthread_mutex_unlock(&sys->shutdown_mu);
	return TR_OK;
}

void tr_system_destroy(tr_system **sys_p)
{
	tr_system *sys;

	if (!sys_p || !*sys_p || tr__my_worker(*sys_p))
		return;
	sys = *sys_p;
	tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL);
	pthread_mutex_lock(&tr__systems_mu);
	atomic_store_explicit(&tr__systems[sys->slot], NULL, memory_order_release);
	tr__systems_alive--;
	pthread_mutex_unlock(&tr__systems_mu);
	/* no sender can still hold `sys`, and no callback refers to it */
	tr__rcu_synchronize();
	tr__rcu_barrier();
	if (sys->crdp)
		urcu_memb_call_rcu_data_free(sys->crdp);
	tr__system_free(sys);
	*sys_p = NULL;
}

int tr_system_stats(const tr_system *sys, tr_stats *out)
{
	if (!sys || !out)
		return TR_EINVAL;
	out->sent = tr__counter_sum(sys, TR__C_SENT);
	out->delivered = tr__counter_sum(sys, TR__C_DELIVERED);
	out->undelivered = tr__counter_sum(sys, TR__C_UNDELIVERED);
	out->dead_letters = tr__counter_sum(sys, TR__C_DEAD_LETTERS);
	out->rejected_full = tr__counter_sum(sys, TR__C_REJECTED_FULL);
	out->stopped = tr__counter_sum(sys, TR__C_STOPPED);
	out->spawned = tr__counter_sum(sys, TR__C_SPAWNED); /* after stopped: see tr__alive */
	out->alive = out->spawned > out->stopped ? out->spawned - out->stopped : 0;
	out->late_replies = tr__counter_sum(sys, TR__C_LATE_REPLIES);
	out->timers_fired = tr__counter_sum(sys, TR__C_TIMERS_FIRED);
	return TR_OK;
}

int tr_system_worker_stats(const tr_system *sys, unsigned index, tr_worker_stats *out)
{
	const tr__counters *c;

	if (!sys || !out || index >= sys->nworkers)
		return TR_EINVAL;
	c = &sys->workers[index].ctr;
	out->runs = atomic_load_explicit(&c->c[TR__C_RUNS], memory_order_relaxed);
	out->steals = atomic_load_explicit(&c->c[TR__C_STEALS], memory_order_relaxed);
	out->parks = atomic_load_explicit(&c->c[TR__C_PARKS], memory_order_relaxed);
	out->wakeups = atomic_load_explicit(&c->c[TR__C_WAKEUPS], memory_order_relaxed);
	return TR_OK;
}
