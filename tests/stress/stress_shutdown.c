/*
 * stress_shutdown: shutting a system down while it is busy.
 *
 * Two rounds, one per shutdown mode. In each, two plain threads and two
 * actors keep sending to SINKS sink actors, half of the messages carrying a
 * pointer payload with a destructor, until sends fail with TR_ESHUTDOWN;
 * main shuts the system down once SCALE / 2 messages went through, while a
 * second thread calls tr_system_shutdown at the same moment.
 *
 * Afterwards the counts must add up exactly: every accepted message was
 * delivered or counted undelivered (none in a graceful round), every refused
 * send was TR_ESHUTDOWN and is a dead letter, every pointer payload was
 * either taken by its receiver or destroyed exactly once (never both, never
 * while its send was refused), and every actor's cleanup ran once with
 * TR_ESHUTDOWN.
 *
 * Usage: stress_shutdown SCALE [SEED]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "../support.h"
#include "stress.h"

enum { N_THREADS = 2, N_ACTORS = 2, N_SENDERS = N_THREADS + N_ACTORS, SINKS = 8 };
enum { MSG_DATA = 1, MSG_PTR, MSG_MORE };

#define CHUNK 64 /* sends an actor sender makes per message it handles */
#define DEADLINE_S 120
#define BACKLOG_MAX (64u * 1024u)
#define PACE_GIVE_UP_S 10.0

/* ---- checks ---- */

/* ---- one round's world ---- */

/* Life of a pointer payload. The sender marks it SENT before handing it
 * over, so that every later transition can tell whether it was legal. */
enum { P_FREE, P_SENT, P_DELIVERED, P_TAKEN, P_DTOR_DELIVERED, P_DTOR_UNDELIVERED,
       P_REFUSED };

/* First member of every actor state, so one cleanup hook serves them all. */
struct life {
	atomic_uint cleanups;
	atomic_int reason;
};

struct sink {
	struct life life;
	uint64_t handled, bad, late;
};

struct sender {
	struct life life;         /* actor senders only */
	uint64_t rng;
	uint64_t ok, shut, dead, other; /* tr_send results */
	int first_other;
	uint64_t early_shut;      /* TR_ESHUTDOWN before shutdown was called */
	uint64_t ptr_bad;         /* *ptr_p not cleared on success or touched on error */
	uint64_t handled, bad_more;
	bool stopped;             /* saw TR_ESHUTDOWN */
	atomic_bool exited;       /* thread senders: out of their loop */
	double since;
};

static struct round {
	tr_system *sys;
	tr_ref sinks[SINKS];
	tr_ref actors[N_ACTORS];
	unsigned threads;    /* sender threads started */
	struct sink sink[SINKS];
	struct sender snd[N_SENDERS];
	atomic_uchar *pool;  /* pointer payloads: their states are their memory */
	uint64_t pool_size;
	atomic_uint_fast64_t pool_next;
	atomic_uint_fast64_t bad_dtor;
	atomic_uint cleanups; /* all actors' */
	atomic_bool shutting, give_up, pacing_off;
	atomic_bool refusing; /* some send met TR_ESHUTDOWN */
} *R;

/* Compared as integers: the pointer may come from anywhere. */
static bool in_pool(const void *p)
{
	uintptr_t a = (uintptr_t)p, lo = (uintptr_t)R->pool;

	return a >= lo && a < lo + R->pool_size * sizeof(*R->pool);
}

static void ptr_dtor(void *p)
{
	atomic_uchar *e = p;
	unsigned char prev = P_SENT;

	if (!in_pool(p)) {
		atomic_fetch_add(&R->bad_dtor, 1);
		return;
	}
	if (atomic_compare_exchange_strong(e, &prev, P_DTOR_UNDELIVERED))
		return;
	if (prev == P_DELIVERED &&
	    atomic_compare_exchange_strong(e, &prev, P_DTOR_DELIVERED))
		return;
	/* taken, refused, destroyed before, or never sent */
	atomic_fetch_add(&R->bad_dtor, 1);
}

/*
 * True while the backlog is too big and the caller should hold off. Reads
 * the runtime's counters only to steer the pace: if they stop moving for
 * PACE_GIVE_UP_S, pacing switches off for good and the final checks say why.
 */
static bool must_wait(double *since)
{
	tr_stats st;

	if (atomic_load_explicit(&R->pacing_off, memory_order_relaxed) ||
	    tr_system_stats(R->sys, &st) != TR_OK ||
	    st.sent <= st.delivered + st.undelivered + BACKLOG_MAX) {
		*since = 0;
		return false;
	}
	if (*since == 0) {
		*since = tr_test_now();
	} else if (tr_test_now() - *since > PACE_GIVE_UP_S) {
		if (!atomic_exchange(&R->pacing_off, true))
			fprintf(stderr, "note: backlog stuck above %u for %.0f s, pacing off\n",
				BACKLOG_MAX, PACE_GIVE_UP_S);
		return false;
	}
	return true;
}

static void count_send(struct sender *s, int rc)
{
	if (rc == TR_OK) {
		s->ok++;
		return;
	}
	if (rc == TR_ESHUTDOWN) {
		s->shut++;
		s->stopped = true;
		atomic_store_explicit(&R->refusing, true, memory_order_relaxed);
		if (!atomic_load(&R->shutting))
			s->early_shut++;
		return;
	}
	/* The sinks live until shutdown stops them, so this is a refusal that
	 * should have said TR_ESHUTDOWN; it is still a dead letter. */
	if (rc == TR_EDEAD) {
		s->dead++;
		return;
	}
	if (s->other++ == 0)
		s->first_other = rc;
}

/* One message to a random sink; every other one carries a pointer while
 * the pool lasts. */
static void send_one(struct sender *s)
{
	uint64_t r = rnd(&s->rng), i;
	tr_ref to = R->sinks[r % SINKS];
	atomic_uchar *e;
	void *p;
	int rc;

	if (!(r & (1ULL << 40)) ||
	    (i = atomic_fetch_add(&R->pool_next, 1)) >= R->pool_size) {
		count_send(s, tr_send(to, MSG_DATA, &r, sizeof(r)));
		return;
	}
	e = &R->pool[i];
	atomic_store(e, P_SENT);
	p = e;
	rc = tr_send_ptr(to, MSG_PTR, &p, ptr_dtor);
	count_send(s, rc);
	if (rc == TR_OK) {
		s->ptr_bad += p != NULL;
	} else {
		unsigned char prev = P_SENT;

		/* Ours again: a destructor call would have moved it on. */
		s->ptr_bad += p != (void *)e;
		if (!atomic_compare_exchange_strong(e, &prev, P_REFUSED))
			atomic_fetch_add(&R->bad_dtor, 1);
	}
}

static void *sender_thread(void *arg)
{
	struct sender *s = arg;
	uint64_t n = 0;

	while (!s->stopped && !atomic_load(&R->give_up)) {
		if (n++ % 1024 == 0) {
			while (must_wait(&s->since) && !atomic_load(&R->give_up))
				sleep_us(200);
		}
		send_one(s);
	}
	atomic_store(&s->exited, true);
	return NULL;
}

static int sender_actor(void *state, tr_msg *m)
{
	struct sender *s = state;
	tr_ref want = s->handled++ ? tr_self() : TR_REF_NONE;
	int n;

	if (tr_msg_type(m) != MSG_MORE || !tr_ref_eq(tr_msg_sender(m), want))
		s->bad_more++;
	if (!must_wait(&s->since)) {
		for (n = 0; n < CHUNK && !s->stopped; n++)
			send_one(s);
	}
	if (!s->stopped && !atomic_load(&R->give_up))
		count_send(s, tr_send(tr_self(), MSG_MORE, NULL, 0));
	return 0;
}

static int sink_fn(void *state, tr_msg *m)
{
	struct sink *k = state;
	atomic_uchar *e;
	unsigned char prev = P_SENT;

	k->handled++;
	if (atomic_load(&k->life.cleanups))
		k->late++;
	if (tr_msg_type(m) == MSG_DATA) {
		k->bad += tr_msg_size(m) != sizeof(uint64_t) || tr_msg_ptr(m) != NULL;
		return 0;
	}
	e = tr_msg_ptr(m);
	if (tr_msg_type(m) != MSG_PTR || !in_pool(e) || tr_msg_data(m) != NULL ||
	    tr_msg_size(m) != 0) {
		k->bad++;
		return 0;
	}
	/* Delivered once, and not destroyed yet. */
	if (!atomic_compare_exchange_strong(e, &prev, P_DELIVERED)) {
		k->bad++;
		return 0;
	}
	/* Take every other one: those must never see their destructor. */
	if ((e - R->pool) % 2 == 0) {
		if (tr_msg_take(m) != (void *)e || tr_msg_take(m) != NULL || tr_msg_ptr(m))
			k->bad++;
		atomic_store(e, P_TAKEN);
	}
	return 0;
}

static void on_cleanup(void *state, int reason)
{
	struct life *l = state;

	atomic_store(&l->reason, reason);
	atomic_fetch_add(&l->cleanups, 1);
	atomic_fetch_add(&R->cleanups, 1);
}

/* ---- a round ---- */

/* Waits, bounded, until `done` says so; false on the deadline. */
static bool wait_for(bool (*done)(void))
{
	double end = tr_test_now() + DEADLINE_S;

	while (!done()) {
		if (tr_test_now() > end)
			return false;
		sleep_us(100);
	}
	return true;
}

struct shutter {
	tr_shutdown_mode mode;
	int rc;
	bool all_stopped; /* every actor cleaned up when the call returned */
	uint64_t alive;
	atomic_bool done;
	pthread_t thread;
	bool started;
};

static void *shutter_thread(void *arg)
{
	struct shutter *sh = arg;
	tr_stats st = { 0 };

	sh->rc = tr_system_shutdown(R->sys, sh->mode);
	/* "later ones wait for it": whichever call returns, the work is done. */
	sh->all_stopped = atomic_load(&R->cleanups) == SINKS + N_ACTORS;
	tr_system_stats(R->sys, &st);
	sh->alive = st.alive;
	atomic_store(&sh->done, true);
	return NULL;
}

static struct shutter shutters[2];

static bool shutters_done(void)
{
	return (!shutters[0].started || atomic_load(&shutters[0].done)) &&
	       (!shutters[1].started || atomic_load(&shutters[1].done));
}

static bool first_shutdown_under_way(void)
{
	return atomic_load(&R->refusing) || shutters_done();
}

/*
 * Two tr_system_shutdown calls at once, each on its own thread so that a
 * hung shutdown is reported instead of hanging the run. Nothing can be
 * cleaned up after such a hang, so the program ends there.
 */
static void shut_down_twice(const char *name, tr_shutdown_mode mode)
{
	unsigned i;

	memset(shutters, 0, sizeof(shutters));
	for (i = 0; i < 2; i++) {
		shutters[i].mode = mode;
		shutters[i].started = pthread_create(&shutters[i].thread, NULL,
						     shutter_thread, &shutters[i]) == 0;
		/* The second call should come while the first one works: once
		 * sends are refused, it has begun (or already finished). */
		if (i == 0)
			wait_for(first_shutdown_under_way);
	}
	if (!CHECK(wait_for(shutters_done), "%s: tr_system_shutdown still running after "
		   "%d s", name, DEADLINE_S)) {
		printf("%u passed, %u failed\n", n_passed, n_failed);
		fflush(NULL);
		_Exit(1);
	}
	for (i = 0; i < 2; i++) {
		if (shutters[i].started)
			pthread_join(shutters[i].thread, NULL);
	}
	CHECK(shutters[0].started && shutters[1].started, "%s: could not start the "
	      "shutdown threads", name);
	for (i = 0; i < 2; i++) {
		struct shutter *sh = &shutters[i];

		if (!sh->started)
			continue;
		CHECK(sh->rc == TR_OK, "%s: tr_system_shutdown call %u: %s", name, i,
		      tr_err_name(sh->rc));
		CHECK(sh->all_stopped && sh->alive == 0, "%s: tr_system_shutdown call %u "
		      "returned before every actor stopped (alive %" PRIu64 ")", name, i,
		      sh->alive);
	}
}

static int spawn_all(void)
{
	tr_actor_opts o = { .behaviour = sink_fn, .cleanup = on_cleanup };
	unsigned i;
	int rc = TR_OK;

	for (i = 0; i < SINKS && rc == TR_OK; i++) {
		o.state = &R->sink[i];
		rc = tr_spawn_opts(R->sys, &o, &R->sinks[i]);
	}
	o.behaviour = sender_actor;
	for (i = 0; i < N_ACTORS && rc == TR_OK; i++) {
		o.state = &R->snd[N_THREADS + i];
		rc = tr_spawn_opts(R->sys, &o, &R->actors[i]);
	}
	return rc;
}

static uint64_t load_wanted;

static bool load_reached(void)
{
	tr_stats st;

	return tr_system_stats(R->sys, &st) == TR_OK && st.sent >= load_wanted;
}

static bool threads_exited(void)
{
	unsigned i;

	for (i = 0; i < R->threads; i++) {
		if (!atomic_load(&R->snd[i].exited))
			return false;
	}
	return true;
}

/* Sends after shutdown must be refused, and a refused pointer stays ours:
 * its destructor (ptr_dtor flags any pointer outside the pool) is not run. */
static void check_sends_after(const char *name, struct sender *s)
{
	uint64_t x = 1;
	void *p = &x;
	int rc;

	rc = tr_send(R->sinks[0], MSG_DATA, &x, sizeof(x));
	count_send(s, rc);
	CHECK(rc == TR_ESHUTDOWN, "%s: tr_send after shutdown: %s", name, tr_err_name(rc));
	rc = tr_send_ptr(R->sinks[1], MSG_PTR, &p, ptr_dtor);
	count_send(s, rc);
	CHECK(rc == TR_ESHUTDOWN && p == &x, "%s: tr_send_ptr after shutdown: %s, "
	      "pointer %s", name, tr_err_name(rc), p == &x ? "kept" : "changed");
}

static void run_round(tr_shutdown_mode mode, uint64_t scale, uint64_t seed)
{
	const char *name = mode == TR_SHUTDOWN_GRACEFUL ? "graceful" : "immediate";
	struct sender sum = { .ok = 0 }, main_s = { .ok = 0 };
	pthread_t th[N_THREADS];
	unsigned started = 0, i, bad_life = 0;
	uint64_t handled = 0, bad_sink = 0, late = 0, stuck = 0, used, q;
	uint64_t by_state[P_REFUSED + 1] = { 0 };
	double t0 = tr_test_now();
	bool in_time = false;
	tr_stats st;
	int rc;

	R = calloc(1, sizeof(*R));
	if (!CHECK(R != NULL, "%s: out of memory", name))
		return;
	load_wanted = scale / 2 ? scale / 2 : 1;
	R->pool_size = load_wanted;
	R->pool = calloc(R->pool_size, sizeof(*R->pool));
	if (!CHECK(R->pool != NULL, "%s: out of memory", name))
		goto free_round;
	rc = tr_system_new(NULL, &R->sys);
	if (!CHECK(rc == TR_OK, "%s: tr_system_new: %s", name, tr_err_name(rc)))
		goto free_round;
	for (i = 0; i < N_SENDERS; i++)
		R->snd[i].rng = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
	rc = spawn_all();
	if (!CHECK(rc == TR_OK, "%s: spawn: %s", name, tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(R->sys);
	if (!CHECK(rc == TR_OK, "%s: tr_system_start: %s", name, tr_err_name(rc)))
		goto shut;

	for (i = 0; i < N_ACTORS; i++) {
		rc = tr_send(R->actors[i], MSG_MORE, NULL, 0);
		count_send(&main_s, rc);
		CHECK(rc == TR_OK, "%s: start actor sender %u: %s", name, i, tr_err_name(rc));
	}
	for (i = 0; i < N_THREADS; i++) {
		if (pthread_create(&th[i], NULL, sender_thread, &R->snd[i]) != 0)
			break;
		R->threads = ++started;
	}
	CHECK(started == N_THREADS, "%s: started %u of %u sender threads", name, started,
	      N_THREADS);
	in_time = wait_for(load_reached);
	CHECK(in_time, "%s: %" PRIu64 " messages not sent within %d s", name, load_wanted,
	      DEADLINE_S);

shut:
	/* Two callers at once: the first does the work, the other must wait. */
	atomic_store(&R->shutting, true);
	shut_down_twice(name, mode);
	in_time = wait_for(threads_exited);
	CHECK(in_time, "%s: sender threads still sending %d s after shutdown", name,
	      DEADLINE_S);
	if (!in_time)
		atomic_store(&R->give_up, true);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	check_sends_after(name, &main_s);
	rc = tr_system_stats(R->sys, &st);
	CHECK(rc == TR_OK, "%s: tr_system_stats: %s", name, tr_err_name(rc));

	/* Workers and senders are joined: everything is ours to read now. */
	for (i = 0; i <= N_SENDERS; i++) {
		struct sender *s = i < N_SENDERS ? &R->snd[i] : &main_s;

		sum.ok += s->ok;
		sum.shut += s->shut;
		sum.dead += s->dead;
		sum.other += s->other;
		sum.first_other = sum.first_other ? sum.first_other : s->first_other;
		sum.early_shut += s->early_shut;
		sum.ptr_bad += s->ptr_bad;
		sum.bad_more += s->bad_more;
		handled += s->handled;
		if (i >= N_THREADS && i < N_SENDERS &&
		    (atomic_load(&s->life.cleanups) != 1 ||
		     atomic_load(&s->life.reason) != TR_ESHUTDOWN))
			bad_life++;
	}
	for (i = 0; i < SINKS; i++) {
		struct sink *k = &R->sink[i];

		handled += k->handled;
		bad_sink += k->bad;
		late += k->late;
		if (atomic_load(&k->life.cleanups) != 1 ||
		    atomic_load(&k->life.reason) != TR_ESHUTDOWN)
			bad_life++;
	}
	used = atomic_load(&R->pool_next);
	used = used < R->pool_size ? used : R->pool_size;
	for (q = 0; q < used; q++)
		by_state[atomic_load(&R->pool[q])]++;
	/* Accepted and never taken nor destroyed: a leak. */
	stuck = by_state[P_FREE] + by_state[P_SENT] + by_state[P_DELIVERED];

	CHECK(sum.other == 0 && sum.dead == 0, "%s: sends refused with something else "
	      "than TR_ESHUTDOWN: %" PRIu64 " TR_EDEAD, %" PRIu64 " other (first %s)", name,
	      sum.dead, sum.other, sum.other ? tr_err_name(sum.first_other) : "none");
	CHECK(sum.early_shut == 0, "%s: %" PRIu64 " TR_ESHUTDOWN before shutdown began",
	      name, sum.early_shut);
	CHECK(sum.ptr_bad == 0, "%s: %" PRIu64 " tr_send_ptr calls mishandled *ptr_p",
	      name, sum.ptr_bad);
	CHECK(bad_sink == 0 && sum.bad_more == 0, "%s: %" PRIu64 " bad messages at sinks, %"
	      PRIu64 " at senders", name, bad_sink, sum.bad_more);
	CHECK(late == 0, "%s: %" PRIu64 " messages handled after cleanup", name, late);
	CHECK(atomic_load(&R->bad_dtor) == 0, "%s: %" PRIu64 " destructor calls on a "
	      "payload taken, refused or destroyed before", name,
	      (uint64_t)atomic_load(&R->bad_dtor));
	CHECK(stuck == 0, "%s: %" PRIu64 " pointer payloads neither taken nor destroyed "
	      "(%" PRIu64 " never delivered)", name, stuck, by_state[P_SENT]);
	CHECK_EQ(st.sent, sum.ok, "stats.sent vs sends accepted");
	CHECK_EQ(st.sent, st.delivered + st.undelivered,
		 "stats.sent vs stats.delivered + stats.undelivered");
	CHECK_EQ(st.delivered, handled, "stats.delivered vs messages the actors handled");
	CHECK_EQ(st.dead_letters, sum.shut + sum.dead + st.undelivered,
		 "stats.dead_letters vs refused sends + stats.undelivered");
	CHECK(by_state[P_DTOR_UNDELIVERED] <= st.undelivered, "%s: %" PRIu64 " pointer "
	      "payloads destroyed undelivered, but only %" PRIu64 " messages undelivered",
	      name, by_state[P_DTOR_UNDELIVERED], st.undelivered);
	if (mode == TR_SHUTDOWN_GRACEFUL)
		CHECK(st.undelivered == 0, "graceful: %" PRIu64 " accepted messages undelivered",
		      st.undelivered);
	CHECK(st.spawned == SINKS + N_ACTORS && st.stopped == st.spawned && st.alive == 0,
	      "%s: spawned %" PRIu64 ", stopped %" PRIu64 ", alive %" PRIu64, name,
	      st.spawned, st.stopped, st.alive);
	CHECK(bad_life == 0, "%s: %u actors without exactly one TR_ESHUTDOWN cleanup", name,
	      bad_life);
	printf("stress_shutdown: %s: %" PRIu64 " accepted, %" PRIu64 " delivered, %" PRIu64
	       " undelivered, %" PRIu64 " TR_ESHUTDOWN; pointers: %" PRIu64 " taken, %"
	       PRIu64 " destroyed after delivery, %" PRIu64 " undelivered, %" PRIu64
	       " refused; %.2f s\n", name, st.sent, st.delivered, st.undelivered, sum.shut,
	       by_state[P_TAKEN], by_state[P_DTOR_DELIVERED], by_state[P_DTOR_UNDELIVERED],
	       by_state[P_REFUSED], tr_test_now() - t0);
	tr_system_destroy(&R->sys);
free_round:
	free(R->pool);
	free(R);
	R = NULL;
}

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0x5eedd0d0;

	printf("stress_shutdown: scale %" PRIu64 ", seed %#" PRIx64 "\n", scale, seed);
	run_round(TR_SHUTDOWN_GRACEFUL, scale, seed);
	run_round(TR_SHUTDOWN_IMMEDIATE, scale, seed + 1);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
