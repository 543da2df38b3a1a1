/*
 * stress_churn: actors come and go while others send to them.
 *
 * SLOTS slots each name a live "victim" actor. Two plain threads and two
 * actors send SCALE messages in all to random slots; every CHURN_EVERY sends
 * a sender also replaces a random slot's victim with a new one and stops the
 * old one with tr_stop. Now and then a message asks its victim to stop itself
 * (tr_stop_self). Senders race the replacements, so they often send through
 * references that have just gone stale.
 *
 * Every refused send must be TR_EDEAD, and after shutdown the runtime's
 * counters must match the senders' own tallies exactly: accepted sends are
 * delivered or, when their receiver stopped first, undelivered dead letters.
 * A message must never reach another incarnation than the one it was sent
 * to, nor an actor after it stopped; every actor's cleanup runs once, with
 * the reason of the way it stopped.
 *
 * Usage: stress_churn SCALE [SEED]
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

enum { N_THREADS = 2, N_ACTORS = 2, N_SENDERS = N_THREADS + N_ACTORS };
enum { MSG_DATA = 1, MSG_DIE, MSG_MORE };

#define SLOTS 64
#define CHURN_EVERY 256 /* sends per sender between two replacements */
#define DIE_ONE_IN 1000 /* share of messages that ask for tr_stop_self */
#define SELF_REASON 4242 /* tr_stop_self's reason: the cleanup must see it */
#define CHUNK 64 /* sends an actor sender makes per message it handles */
#define DEADLINE_S 120
#define BACKLOG_MAX (64u * 1024u)

/* ---- checks ---- */

/* ---- pacing ---- */

static tr_system *sys;

/* ---- actors ---- */

/* First member of every actor state, so one cleanup hook serves them all. */
struct life {
	atomic_uint cleanups;
	atomic_int reason;
};

static void on_cleanup(void *state, int reason)
{
	struct life *l = state;

	atomic_store(&l->reason, reason);
	atomic_fetch_add(&l->cleanups, 1);
}

struct victim {
	struct life life;
	tr_ref ref;                 /* written before the victim is published */
	atomic_bool stop_accepted;  /* a tr_stop on it returned TR_OK */
	atomic_bool stopping;       /* counted in n_stopping */
	bool stopped_self;          /* its behaviour called tr_stop_self */
	uint64_t received;
	uint64_t late;              /* handled after it stopped or asked to */
	uint64_t misrouted;         /* addressed to another incarnation */
	int self_rc;                /* tr_stop_self's return */
};

static struct victim *victims;
static uint32_t n_victims_max;
static atomic_uint n_victims;            /* victims[] entries handed out */
static _Atomic uint32_t slot[SLOTS];     /* index into victims[] */
/* Stops asked for (each victim at most once) and cleanups that followed;
 * equal once every stop in flight has completed. */
static atomic_uint n_stopping, n_cleaned;

static void mark_stopping(struct victim *v)
{
	if (!atomic_exchange(&v->stopping, true))
		atomic_fetch_add(&n_stopping, 1);
}

static void victim_cleanup(void *state, int reason)
{
	on_cleanup(state, reason);
	atomic_fetch_add(&n_cleaned, 1);
}

static int victim_fn(void *state, tr_msg *m)
{
	struct victim *v = state;
	uint64_t to = 0;

	v->received++;
	if (v->stopped_self || atomic_load(&v->life.cleanups))
		v->late++;
	if (tr_msg_size(m) == sizeof(to))
		memcpy(&to, tr_msg_data(m), sizeof(to));
	/* A reused actor slot must never receive its predecessor's mail. */
	if (to != tr_self().id)
		v->misrouted++;
	if (tr_msg_type(m) == MSG_DIE && !v->stopped_self) {
		mark_stopping(v);
		v->stopped_self = true;
		v->self_rc = tr_stop_self(SELF_REASON);
	}
	return 0;
}

static int spawn_victim(uint32_t *idx)
{
	tr_actor_opts o = { .behaviour = victim_fn, .cleanup = victim_cleanup };
	uint32_t i = atomic_fetch_add(&n_victims, 1);

	if (i >= n_victims_max)
		return 1; /* churn budget used up: not an error */
	o.state = &victims[i];
	*idx = i;
	return tr_spawn_opts(sys, &o, &victims[i].ref);
}

/* ---- senders ---- */

struct sender {
	struct life life;
	uint64_t rng;
	uint64_t quota, done;
	uint64_t ok, dead, other; /* tr_send results */
	int first_other;
	uint64_t stop_ok, stop_dead, stop_other, stop_dead_live;
	int first_stop_other;
	uint64_t spawn_err, churns;
	int first_spawn_err;
	uint64_t handled, bad_more; /* actor senders: their own "more" messages */
	double since;
	tr_test_latch *finished;
};

static void count_send(struct sender *s, int rc)
{
	if (rc == TR_OK) {
		s->ok++;
	} else if (rc == TR_EDEAD) {
		s->dead++;
	} else if (s->other++ == 0) {
		s->first_other = rc;
	}
}

/* Replaces a random slot's victim and stops the old one. */
static void churn(struct sender *s)
{
	uint32_t idx, old;
	int rc = spawn_victim(&idx);

	if (rc == 1)
		return;
	if (rc != TR_OK) {
		if (s->spawn_err++ == 0)
			s->first_spawn_err = rc;
		return;
	}
	s->churns++;
	old = atomic_exchange(&slot[rnd(&s->rng) % SLOTS], idx);
	rc = tr_stop(victims[old].ref);
	if (rc == TR_OK) {
		atomic_store(&victims[old].stop_accepted, true);
		mark_stopping(&victims[old]);
		s->stop_ok++;
	} else if (rc == TR_EDEAD) {
		/* Only this sender could stop it, so it must have stopped itself. */
		s->stop_dead++;
		if (!atomic_load(&victims[old].stopping))
			s->stop_dead_live++;
	} else if (s->stop_other++ == 0) {
		s->first_stop_other = rc;
	}
}

/* One send to a random slot, through whatever reference it holds now. */
static void send_one(struct sender *s)
{
	uint64_t r = rnd(&s->rng);
	uint32_t idx = atomic_load(&slot[r % SLOTS]);
	tr_ref to = victims[idx].ref;
	uint32_t type = (r >> 32) % DIE_ONE_IN ? MSG_DATA : MSG_DIE;

	count_send(s, tr_send(to, type, &to.id, sizeof(to.id)));
	if (++s->done % CHURN_EVERY == 0)
		churn(s);
}

static atomic_bool give_up; /* set when main's deadline passed */

static void *sender_thread(void *arg)
{
	struct sender *s = arg;

	while (s->done < s->quota && !atomic_load(&give_up)) {
		if (s->done % 1024 == 0) {
			while (stress_must_wait(sys, BACKLOG_MAX, &s->since) && !atomic_load(&give_up))
				sleep_us(200);
		}
		send_one(s);
	}
	tr_test_latch_count_down(s->finished);
	return NULL;
}

static int sender_actor(void *state, tr_msg *m)
{
	struct sender *s = state;
	tr_ref want = s->handled++ ? tr_self() : TR_REF_NONE;
	int n, rc;

	if (tr_msg_type(m) != MSG_MORE || !tr_ref_eq(tr_msg_sender(m), want))
		s->bad_more++;
	if (!stress_must_wait(sys, BACKLOG_MAX, &s->since)) {
		for (n = 0; n < CHUNK && s->done < s->quota; n++)
			send_one(s);
	}
	if (s->done < s->quota && !atomic_load(&give_up)) {
		rc = tr_send(tr_self(), MSG_MORE, NULL, 0);
		count_send(s, rc);
		if (rc == TR_OK)
			return 0;
	}
	tr_test_latch_count_down(s->finished);
	return 0;
}

/* ---- main ---- */

/* Waits until every accepted message was handled and every stop asked for
 * has run its cleanup, so that shutdown finds nothing in flight and each
 * victim's cleanup reason is fixed by what the run did to it. (More
 * cleanups than stops is a bug the per-victim checks report, not a wait.) */
static bool quiesce(void)
{
	double end = tr_test_now() + DEADLINE_S;
	tr_stats st;

	while (tr_test_now() < end) {
		if (tr_system_stats(sys, &st) == TR_OK &&
		    st.sent == st.delivered + st.undelivered &&
		    atomic_load(&n_cleaned) >= atomic_load(&n_stopping))
			return true;
		sleep_us(1000);
	}
	return false;
}

static int expected_reason(const struct victim *v)
{
	if (v->stopped_self)
		return SELF_REASON;
	return atomic_load(&v->stop_accepted) ? TR_OK : TR_ESHUTDOWN;
}

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0x5eedc0ffee;
	static struct sender snd[N_SENDERS];
	struct sender sum = { .done = 0 };
	tr_test_latch finished;
	pthread_t th[N_THREADS];
	tr_ref actors[N_ACTORS];
	uint64_t main_ok = 0, received = 0, late = 0, misrouted = 0, bad_reason = 0;
	uint64_t self_rc_bad = 0, spawned;
	unsigned started = 0, i, s;
	uint32_t idx;
	tr_stats st;
	double t0 = tr_test_now();
	bool in_time = false;
	int rc;

	printf("stress_churn: scale %" PRIu64 ", seed %#" PRIx64 "\n", scale, seed);
	n_victims_max = SLOTS + scale / CHURN_EVERY + N_SENDERS;
	victims = calloc(n_victims_max, sizeof(*victims));
	tr_test_latch_init(&finished, N_SENDERS);
	if (!CHECK(victims != NULL, "out of memory"))
		goto out;
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;

	for (s = 0; s < SLOTS && rc == TR_OK; s++) {
		rc = spawn_victim(&idx);
		atomic_store(&slot[s], idx);
	}
	for (i = 0; i < N_SENDERS && rc == TR_OK; i++) {
		tr_actor_opts o = { .behaviour = sender_actor, .state = &snd[i],
				    .cleanup = on_cleanup };

		snd[i].rng = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
		snd[i].quota = scale / N_SENDERS + (i < scale % N_SENDERS);
		snd[i].finished = &finished;
		if (i >= N_THREADS)
			rc = tr_spawn_opts(sys, &o, &actors[i - N_THREADS]);
	}
	if (!CHECK(rc == TR_OK, "spawn before start: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;

	for (i = 0; i < N_ACTORS; i++) {
		rc = tr_send(actors[i], MSG_MORE, NULL, 0);
		if (rc == TR_OK)
			main_ok++;
		else
			tr_test_latch_count_down(&finished);
		CHECK(rc == TR_OK, "start actor sender %u: %s", i, tr_err_name(rc));
	}
	for (i = 0; i < N_THREADS; i++) {
		if (pthread_create(&th[i], NULL, sender_thread, &snd[i]) != 0) {
			tr_test_latch_count_down(&finished);
			continue;
		}
		started++;
	}
	CHECK(started == N_THREADS, "started %u of %u sender threads", started, N_THREADS);

	in_time = tr_test_latch_wait(&finished, DEADLINE_S);
	CHECK(in_time, "senders not finished within %d s", DEADLINE_S);
	if (!in_time)
		atomic_store(&give_up, true);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	in_time = in_time && quiesce();
	CHECK(in_time, "messages or stops still in flight after %d s: cleaned %u of %u",
	      DEADLINE_S, atomic_load(&n_cleaned), atomic_load(&n_stopping));

shut:
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* Workers are joined: every state is ours to read now. */
	for (i = 0; i < N_SENDERS; i++) {
		struct sender *p = &snd[i];

		sum.ok += p->ok;
		sum.dead += p->dead;
		sum.other += p->other;
		sum.first_other = sum.first_other ? sum.first_other : p->first_other;
		sum.stop_ok += p->stop_ok;
		sum.stop_dead += p->stop_dead;
		sum.stop_dead_live += p->stop_dead_live;
		sum.stop_other += p->stop_other;
		sum.first_stop_other = sum.first_stop_other ? sum.first_stop_other
							    : p->first_stop_other;
		sum.spawn_err += p->spawn_err;
		sum.first_spawn_err = sum.first_spawn_err ? sum.first_spawn_err
							  : p->first_spawn_err;
		sum.churns += p->churns;
		sum.bad_more += p->bad_more;
		received += p->handled;
	}
	sum.ok += main_ok;
	spawned = atomic_load(&n_victims);
	if (spawned > n_victims_max)
		spawned = n_victims_max;
	for (idx = 0; idx < spawned; idx++) {
		struct victim *v = &victims[idx];
		unsigned n = atomic_load(&v->life.cleanups);
		int want = expected_reason(v), got = atomic_load(&v->life.reason);

		received += v->received;
		late += v->late;
		misrouted += v->misrouted;
		self_rc_bad += v->stopped_self && v->self_rc != TR_OK;
		if (n != 1 || got != want) {
			if (bad_reason++ == 0)
				fprintf(stderr, "victim %u: cleanup ran %u times, reason %d (%s), "
					"expected once with %d (%s)\n", idx, n, got,
					tr_err_name(got), want, tr_err_name(want));
		}
	}

	CHECK(sum.other == 0, "%" PRIu64 " sends failed with something else than TR_EDEAD, "
	      "first %s", sum.other, tr_err_name(sum.first_other));
	CHECK(sum.stop_other == 0 && sum.stop_dead_live == 0, "tr_stop: %" PRIu64
	      " unexpected errors (first %s), %" PRIu64 " TR_EDEAD for a live actor",
	      sum.stop_other, tr_err_name(sum.first_stop_other), sum.stop_dead_live);
	CHECK(sum.spawn_err == 0, "%" PRIu64 " spawns failed, first %s", sum.spawn_err,
	      tr_err_name(sum.first_spawn_err));
	CHECK(self_rc_bad == 0, "%" PRIu64 " tr_stop_self calls failed", self_rc_bad);
	CHECK(sum.bad_more == 0, "%" PRIu64 " wrong 'more' messages", sum.bad_more);
	CHECK(misrouted == 0, "%" PRIu64 " messages reached another incarnation", misrouted);
	CHECK(late == 0, "%" PRIu64 " messages handled after their actor stopped", late);
	CHECK(bad_reason == 0, "%" PRIu64 " victims with a wrong cleanup count or reason",
	      bad_reason);
	CHECK(sum.dead > 0, "no send met a stale reference: the churn did not bite");
	CHECK_EQ(st.sent, sum.ok, "stats.sent vs sends accepted");
	CHECK_EQ(st.sent, st.delivered + st.undelivered,
		 "stats.sent vs stats.delivered + stats.undelivered");
	CHECK_EQ(st.dead_letters, sum.dead + st.undelivered,
		 "stats.dead_letters vs TR_EDEAD sends + stats.undelivered");
	CHECK_EQ(st.delivered, received, "stats.delivered vs messages the actors handled");
	CHECK(st.spawned == spawned + N_ACTORS && st.stopped == st.spawned && st.alive == 0,
	      "spawned %" PRIu64 " (want %" PRIu64 "), stopped %" PRIu64 ", alive %" PRIu64,
	      st.spawned, spawned + N_ACTORS, st.stopped, st.alive);
	for (i = N_THREADS; i < N_SENDERS; i++)
		CHECK(atomic_load(&snd[i].life.cleanups) == 1 &&
		      atomic_load(&snd[i].life.reason) == TR_ESHUTDOWN,
		      "actor sender %u: cleanup ran %u times, reason %s", i,
		      atomic_load(&snd[i].life.cleanups),
		      tr_err_name(atomic_load(&snd[i].life.reason)));
	printf("stress_churn: %" PRIu64 " sends accepted, %" PRIu64 " TR_EDEAD, %" PRIu64
	       " undelivered, %" PRIu64 " actors spawned, %" PRIu64 " tr_stop ok / %" PRIu64
	       " dead, %.2f s\n", sum.ok, sum.dead, st.undelivered, st.spawned,
	       sum.stop_ok, sum.stop_dead, tr_test_now() - t0);
out:
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&finished);
	free(victims);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
