/*
 * stress_supervisor: a supervisor restarting children that fail under load.
 *
 * Phase 1: a one_for_one supervisor with a high intensity keeps KIDS children.
 * Two plain threads and two actors send work to random children, looking up
 * each child's current reference with tr_supervisor_child, until the children
 * have failed SCALE/1000 times: about one message in POISON_ONE_IN (chosen
 * from the seed) tells its child to fail. Children have bounded mailboxes;
 * a full one (TR_EFULL) makes the sender move on. Children count their failures; once
 * every message is handled, the supervisor's restarts and child exits must
 * equal that count, every restart must have been a fresh start (the start
 * function ran, new state, a new reference, and the previous incarnation was
 * gone first), and no message may reach another incarnation than the one it
 * was sent to.
 *
 * Phase 2: ROUNDS_MIN times (SCALE/ROUNDS_PER if more), a one_for_one
 * supervisor allowing BURST_MAX restarts in a minute is flooded with failing
 * messages from two threads, each round in a new system. It must give
 * up exactly once: one DOWN with TR_ESUPERVISOR at its watcher, exactly
 * BURST_MAX restarts, every incarnation stopped and its DOWN handled before
 * the supervisor's own.
 *
 * Usage: stress_supervisor SCALE [SEED]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "../support.h"
#include "stress.h"

enum { N_THREADS = 2, N_ACTORS = 2, N_SENDERS = N_THREADS + N_ACTORS };
enum { MSG_WORK = 1, MSG_MORE, MSG_WATCH };

#define KIDS 32
#define POISON_ONE_IN 256 /* share of work messages that make their child fail */
/* Bounded child mailboxes: a failing child discards what is queued behind
 * the failing message, so without a bound the senders would mostly feed
 * mailboxes about to be dropped rather than children doing work. */
#define KID_MAILBOX 64
#define CHUNK 64         /* sends an actor sender makes per message it handles */
#define FAIL_RC 4242     /* a failing child's reason */
#define DEADLINE_S 120
#define BACKLOG_MAX (64u * 1024u)
#define MIN_FAILURES 20u

#define BURST_KIDS 8
#define BURST_MAX 10u /* phase 2 intensity: restarts allowed in a minute */
#define ROUNDS_MIN 3u
#define ROUNDS_PER 500000u /* SCALE per phase-2 round beyond the minimum */

/* ---- checks ---- */

/* ---- children ---- */

/* One per child spec; shared by all its incarnations. */
struct spec {
	atomic_uint starts;       /* incarnations started */
	atomic_uint cleanups;     /* incarnations stopped */
	atomic_int alive;         /* started - stopped */
	_Atomic uint64_t last_ref;
	atomic_uint overlap;      /* a start found the previous incarnation alive */
	atomic_uint reused_ref;   /* a start got the previous incarnation's ref */
	atomic_uint bad_reason;   /* a cleanup reason that fits no stop */
	atomic_uint stale_state;  /* state that was not fresh at start */
	_Atomic uint64_t handled; /* work messages handled, all incarnations */
};

struct work {
	uint64_t to;     /* the reference it was sent through */
	uint64_t value;
	uint32_t poison;
};

/* Fresh for every incarnation. */
struct kid {
	struct spec *spec;
	unsigned incarnation;
	uint64_t handled, sum;
	unsigned failed;   /* set just before it returns FAIL_RC */
};

static atomic_uint failures;   /* children that returned FAIL_RC */
static atomic_uint misrouted;  /* work that reached another incarnation */
static atomic_uint late;       /* work handled after its child failed */
static atomic_uint not_latest; /* work handled by an incarnation superseded */

static int kid_beh(void *state, tr_msg *m)
{
	struct kid *k = state;
	struct work w;

	if (tr_msg_type(m) != MSG_WORK || tr_msg_size(m) != sizeof(w))
		return 0;
	memcpy(&w, tr_msg_data(m), sizeof(w));
	if (k->failed)
		atomic_fetch_add(&late, 1);
	if (w.to != tr_self().id)
		atomic_fetch_add(&misrouted, 1);
	/* one_for_one: the next incarnation starts only after this one is gone */
	if (k->incarnation != atomic_load(&k->spec->starts))
		atomic_fetch_add(&not_latest, 1);
	k->handled++;
	k->sum += w.value;
	if (w.poison) {
		k->failed = 1;
		atomic_fetch_add(&failures, 1);
		return FAIL_RC;
	}
	return 0;
}

static void kid_cleanup(void *state, int reason)
{
	struct kid *k = state;
	struct spec *s = k->spec;
	bool ok;

	/* failed by itself, stopped by its supervisor (TR_OK), or shut down */
	ok = k->failed ? reason == FAIL_RC : (reason == TR_OK || reason == TR_ESHUTDOWN);
	if (!ok)
		atomic_fetch_add(&s->bad_reason, 1);
	atomic_fetch_add(&s->handled, k->handled);
	atomic_fetch_sub(&s->alive, 1);
	atomic_fetch_add(&s->cleanups, 1);
	free(k);
}

static int kid_start(tr_system *sys, void *arg, tr_ref *out)
{
	struct spec *s = arg;
	tr_actor_opts o = { .behaviour = kid_beh, .cleanup = kid_cleanup,
			    .mailbox_capacity = KID_MAILBOX, .overflow = TR_OVERFLOW_REJECT };
	struct kid *k;
	int rc;

	/* The previous incarnation's DOWN made this restart: it must be gone. */
	if (atomic_load(&s->alive) != 0)
		atomic_fetch_add(&s->overlap, 1);
	k = calloc(1, sizeof(*k));
	if (!k)
		return TR_ENOMEM;
	if (k->handled || k->sum || k->failed)
		atomic_fetch_add(&s->stale_state, 1);
	k->spec = s;
	k->incarnation = atomic_load(&s->starts) + 1;
	o.state = k;
	atomic_fetch_add(&s->alive, 1);
	rc = tr_spawn_opts(sys, &o, out);
	if (rc != TR_OK) {
		atomic_fetch_sub(&s->alive, 1);
		free(k);
		return rc;
	}
	if (atomic_load(&s->last_ref) == out->id)
		atomic_fetch_add(&s->reused_ref, 1);
	atomic_store(&s->last_ref, out->id);
	atomic_fetch_add(&s->starts, 1);
	return TR_OK;
}

static void specs_init(struct spec *s, tr_child_spec *cs, size_t n)
{
	memset(s, 0, n * sizeof(*s));
	for (size_t i = 0; i < n; i++)
		cs[i] = (tr_child_spec){ .name = NULL, .start = kid_start, .arg = &s[i],
					 .restart = TR_PERMANENT };
}

/* Sums of the per-spec problem counters. */
static unsigned specs_sum(struct spec *s, size_t n, size_t off)
{
	unsigned t = 0;

	for (size_t i = 0; i < n; i++)
		t += atomic_load((atomic_uint *)((char *)&s[i] + off));
	return t;
}

#define SPECS_SUM(s, n, field) specs_sum((s), (n), offsetof(struct spec, field))

/* ---- phase 1: senders ---- */

static tr_system *sys;
static tr_supervisor *sup;
static unsigned fail_target;
static atomic_bool give_up;

struct sender {
	uint64_t rng;
	uint64_t quota, done;
	uint64_t ok, dead, full, none, other; /* tr_send results; NONE refs skipped */
	int first_other;
	uint64_t more_ok, handled, bad_more;
	double since;
	tr_test_latch *finished;
};

static bool must_wait(double *since)
{
	tr_stats st;

	if (tr_system_stats(sys, &st) != TR_OK ||
	    st.sent <= st.delivered + st.undelivered + BACKLOG_MAX) {
		*since = 0;
		return false;
	}
	if (*since == 0)
		*since = tr_test_now();
	return tr_test_now() - *since < 10.0; /* stuck: let the checks say why */
}

static bool sender_done(const struct sender *s)
{
	return s->done >= s->quota || atomic_load(&failures) >= fail_target ||
	       atomic_load(&give_up);
}

/* One send to a random child; false if its mailbox was full. Only sends
 * that reached a child (accepted or refused as dead) count toward the quota. */
static bool send_one(struct sender *s)
{
	uint64_t r = rnd(&s->rng);
	tr_ref to = tr_supervisor_child(sup, r % KIDS);
	struct work w = { .to = to.id, .value = r >> 40,
			  .poison = (r >> 20) % POISON_ONE_IN == 0 };
	int rc;

	if (tr_ref_is_none(to)) {
		s->none++; /* being restarted right now */
		return false;
	}
	rc = tr_send(to, MSG_WORK, &w, sizeof(w));
	if (rc == TR_EFULL) {
		s->full++;
		return false;
	}
	s->done++;
	if (rc == TR_OK)
		s->ok++;
	else if (rc == TR_EDEAD)
		s->dead++; /* failed since we looked it up */
	else if (s->other++ == 0)
		s->first_other = rc;
	return true;
}

static void *sender_thread(void *arg)
{
	struct sender *s = arg;

	while (!sender_done(s)) {
		if (s->done % 1024 == 0) {
			while (must_wait(&s->since) && !atomic_load(&give_up))
				sleep_us(200);
		}
		if (!send_one(s))
			sched_yield(); /* let the children catch up */
	}
	tr_test_latch_count_down(s->finished);
	return NULL;
}

static int sender_actor(void *state, tr_msg *m)
{
	struct sender *s = state;

	s->handled++;
	if (tr_msg_type(m) != MSG_MORE)
		s->bad_more++;
	if (!must_wait(&s->since)) {
		for (int n = 0; n < CHUNK && !sender_done(s); n++)
			(void)send_one(s);
	}
	if (!sender_done(s)) {
		int rc = tr_send(tr_self(), MSG_MORE, NULL, 0);

		if (rc == TR_OK) {
			s->more_ok++;
			return 0;
		}
		s->first_other = rc;
		s->other++;
	}
	tr_test_latch_count_down(s->finished);
	return 0;
}

/* Waits until every accepted message was handled and the supervisor has
 * handled every failure those messages caused. */
static bool quiesce(tr_supervisor *h)
{
	double end = tr_test_now() + DEADLINE_S;
	tr_sup_stats ss;
	tr_stats st;

	while (tr_test_now() < end) {
		unsigned f = atomic_load(&failures);

		if (tr_system_stats(sys, &st) == TR_OK &&
		    st.sent == st.delivered + st.undelivered &&
		    tr_supervisor_stats(h, &ss) == TR_OK && ss.child_exits == f &&
		    ss.restarts == f && atomic_load(&failures) == f)
			return true;
		sleep_us(1000);
	}
	return false;
}

static void phase1(uint64_t scale, uint64_t seed)
{
	static struct spec specs[KIDS];
	static struct sender snd[N_SENDERS];
	tr_child_spec cs[KIDS];
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .max_restarts = 1u << 30,
			  .period_ms = 1000, .children = cs, .nchildren = KIDS };
	uint64_t work_ok = 0, more_ok = 0, dead = 0, full = 0, none = 0, other = 0, handled = 0;
	uint64_t main_ok = 0, bad_more = 0, actor_handled = 0;
	int first_other = 0;
	tr_test_latch finished;
	pthread_t th[N_THREADS];
	tr_ref actors[N_ACTORS], sref;
	tr_sup_stats ss;
	tr_stats st;
	unsigned started = 0, i, starts;
	double t0 = tr_test_now();
	bool in_time;
	int rc;

	fail_target = (unsigned)(scale / 1000 > MIN_FAILURES ? scale / 1000 : MIN_FAILURES);
	specs_init(specs, cs, KIDS);
	tr_test_latch_init(&finished, N_SENDERS);
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		return;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto out;
	rc = tr_supervisor_start(sys, &o, &sref, &sup);
	if (!CHECK(rc == TR_OK, "tr_supervisor_start: %s", tr_err_name(rc)))
		goto out;

	for (i = 0; i < N_SENDERS; i++) {
		snd[i].rng = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
		snd[i].quota = scale / N_SENDERS + 1;
		snd[i].finished = &finished;
		if (i >= N_THREADS) {
			tr_actor_opts ao = { .behaviour = sender_actor, .state = &snd[i] };

			rc = tr_spawn_opts(sys, &ao, &actors[i - N_THREADS]);
			if (rc == TR_OK)
				rc = tr_send(actors[i - N_THREADS], MSG_MORE, NULL, 0);
			if (CHECK(rc == TR_OK, "start sender actor: %s", tr_err_name(rc)))
				main_ok++;
			else
				tr_test_latch_count_down(&finished);
		}
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
	in_time = in_time && quiesce(sup);
	CHECK(in_time, "failures still being handled after %d s", DEADLINE_S);

	/* Quiet now: the counters are final until shutdown. */
	rc = tr_supervisor_stats(sup, &ss);
	CHECK(rc == TR_OK, "tr_supervisor_stats: %s", tr_err_name(rc));
	CHECK(atomic_load(&failures) >= fail_target, "only %u failures, wanted %u",
	      atomic_load(&failures), fail_target);
	CHECK_EQ(ss.restarts, atomic_load(&failures), "restarts vs failures induced");
	CHECK_EQ(ss.child_exits, atomic_load(&failures), "child exits vs failures induced");
	CHECK_EQ(ss.escalations, 0, "escalations");
	starts = 0;
	for (i = 0; i < KIDS; i++) {
		starts += atomic_load(&specs[i].starts);
		CHECK(!tr_ref_is_none(tr_supervisor_child(sup, i)), "child %u not running", i);
		CHECK_EQ(tr_supervisor_child(sup, i).id, atomic_load(&specs[i].last_ref),
			 "published ref vs latest incarnation");
	}
	CHECK_EQ(starts - KIDS, ss.restarts, "start function calls after the first vs restarts");

	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* Workers are joined: all state is ours to read. */
	for (i = 0; i < N_SENDERS; i++) {
		work_ok += snd[i].ok;
		more_ok += snd[i].more_ok;
		dead += snd[i].dead;
		full += snd[i].full;
		none += snd[i].none;
		other += snd[i].other;
		first_other = first_other ? first_other : snd[i].first_other;
		bad_more += snd[i].bad_more;
		if (i >= N_THREADS)
			actor_handled += snd[i].handled;
	}
	for (i = 0; i < KIDS; i++) {
		handled += atomic_load(&specs[i].handled);
		CHECK_EQ(atomic_load(&specs[i].cleanups), atomic_load(&specs[i].starts),
			 "incarnations stopped vs started");
	}
	CHECK(other == 0, "%" PRIu64 " sends failed with something else than TR_EDEAD or "
	      "TR_EFULL, first %s",
	      other, tr_err_name(first_other));
	CHECK(bad_more == 0, "%" PRIu64 " wrong messages at the senders", bad_more);
	CHECK(SPECS_SUM(specs, KIDS, overlap) == 0,
	      "%u restarts while the previous incarnation was alive",
	      SPECS_SUM(specs, KIDS, overlap));
	CHECK(SPECS_SUM(specs, KIDS, reused_ref) == 0, "%u restarts reused a reference",
	      SPECS_SUM(specs, KIDS, reused_ref));
	CHECK(SPECS_SUM(specs, KIDS, stale_state) == 0, "%u restarts without fresh state",
	      SPECS_SUM(specs, KIDS, stale_state));
	CHECK(SPECS_SUM(specs, KIDS, bad_reason) == 0, "%u cleanups with a wrong reason",
	      SPECS_SUM(specs, KIDS, bad_reason));
	CHECK(atomic_load(&misrouted) == 0, "%u messages reached another incarnation",
	      atomic_load(&misrouted));
	CHECK(atomic_load(&late) == 0, "%u messages handled after their child failed",
	      atomic_load(&late));
	CHECK(atomic_load(&not_latest) == 0, "%u messages handled by a superseded incarnation",
	      atomic_load(&not_latest));
	CHECK(dead > 0 || none > 0, "no send met a failed child: the failures did not bite");
	/* user messages: work and the actor senders' notes to themselves; the
	 * supervisor sends none (no start failed) and DOWNs are not counted */
	CHECK_EQ(st.sent, work_ok + more_ok + main_ok, "stats.sent vs sends accepted");
	CHECK_EQ(st.sent, st.delivered + st.undelivered, "stats.sent vs delivered + undelivered");
	CHECK_EQ(st.rejected_full, full, "stats.rejected_full vs TR_EFULL sends");
	CHECK_EQ(st.delivered, handled + actor_handled, "stats.delivered vs messages handled");
	CHECK(st.alive == 0, "%" PRIu64 " actors alive after shutdown", st.alive);
	CHECK(tr_ref_is_none(tr_supervisor_child(sup, 0)), "child published after shutdown");
	printf("stress_supervisor: phase 1: %u failures, %" PRIu64 " restarts, %" PRIu64
	       " work sent, %" PRIu64 " handled, %" PRIu64 " undelivered, %" PRIu64
	       " TR_EDEAD, %" PRIu64 " TR_EFULL, %" PRIu64 " looked up while restarting, "
	       "%.2f s\n", atomic_load(&failures), ss.restarts, work_ok, handled,
	       st.undelivered, dead, full, none, tr_test_now() - t0);
out:
	tr_supervisor_release(&sup);
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&finished);
}

/* ---- phase 2: a burst beyond the intensity ---- */

struct watcher {
	atomic_bool watching;
	atomic_int monitor_rc;
	atomic_uint downs;
	atomic_int reason;
	atomic_uint kid_exits_seen; /* child DOWNs the supervisor had handled then */
	tr_supervisor *h;
};

static int watcher_beh(void *state, tr_msg *m)
{
	struct watcher *w = state;
	const tr_down *d = tr_msg_down(m);

	if (tr_msg_type(m) == MSG_WATCH) {
		tr_ref target;

		memcpy(&target, tr_msg_data(m), sizeof(target));
		atomic_store(&w->monitor_rc, tr_monitor(target));
		atomic_store(&w->watching, true);
	} else if (d && tr_msg_type(m) == TR_MSG_DOWN) {
		tr_sup_stats ss;

		if (tr_supervisor_stats(w->h, &ss) == TR_OK)
			atomic_store(&w->kid_exits_seen, (unsigned)ss.child_exits);
		atomic_store(&w->reason, d->reason);
		atomic_fetch_add(&w->downs, 1);
	}
	return 0;
}

struct blaster {
	uint64_t rng;
	tr_supervisor *h;
	struct watcher *w;
	uint64_t sent;
};

static void *blaster_thread(void *arg)
{
	struct blaster *b = arg;
	double end = tr_test_now() + DEADLINE_S;

	while (!atomic_load(&b->w->downs) && tr_test_now() < end) {
		uint64_t r = rnd(&b->rng);
		tr_ref to = tr_supervisor_child(b->h, r % BURST_KIDS);
		struct work w = { .to = to.id, .value = r >> 40, .poison = 1 };

		if (!tr_ref_is_none(to) && tr_send(to, MSG_WORK, &w, sizeof(w)) == TR_OK)
			b->sent++;
		else
			sleep_us(10);
	}
	return NULL;
}

static void phase2_round(unsigned round, uint64_t seed)
{
	static struct spec specs[BURST_KIDS];
	tr_child_spec cs[BURST_KIDS];
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .max_restarts = BURST_MAX,
			  .period_ms = 60000, .children = cs, .nchildren = BURST_KIDS };
	struct watcher *w = calloc(1, sizeof(*w));
	struct blaster b[2];
	pthread_t th[2];
	unsigned started = 0, starts = 0, i;
	tr_ref sref, wref;
	tr_sup_stats ss;
	double end;
	int rc;

	specs_init(specs, cs, BURST_KIDS);
	atomic_store(&failures, 0);
	if (!CHECK(w != NULL, "out of memory"))
		return;
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto out;
	rc = tr_supervisor_start(sys, &o, &sref, &sup);
	if (!CHECK(rc == TR_OK, "tr_supervisor_start: %s", tr_err_name(rc)))
		goto out;
	w->h = sup;
	rc = tr_spawn(sys, watcher_beh, w, &wref);
	if (!CHECK(rc == TR_OK, "spawn watcher: %s", tr_err_name(rc)))
		goto out;
	rc = tr_send(wref, MSG_WATCH, &sref, sizeof(sref));
	if (!CHECK(rc == TR_OK, "send watch: %s", tr_err_name(rc)))
		goto out;
	end = tr_test_now() + DEADLINE_S;
	while (!atomic_load(&w->watching) && tr_test_now() < end)
		sleep_us(100);
	if (!CHECK(atomic_load(&w->watching) && atomic_load(&w->monitor_rc) == TR_OK,
		   "watcher could not monitor the supervisor: %s",
		   tr_err_name(atomic_load(&w->monitor_rc))))
		goto out;

	for (i = 0; i < 2; i++) {
		b[i] = (struct blaster){ .rng = seed ^ (0xabcdef12345ULL * (round * 2 + i + 1)),
					 .h = sup, .w = w };
		if (pthread_create(&th[i], NULL, blaster_thread, &b[i]) == 0)
			started++;
	}
	CHECK(started == 2, "started %u of 2 blasters", started);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	CHECK(atomic_load(&w->downs) > 0, "round %u: supervisor never gave up", round);
	/* Its children are down before it: every incarnation stops. */
	end = tr_test_now() + DEADLINE_S;
	for (i = 0; i < BURST_KIDS; i++)
		while (atomic_load(&specs[i].cleanups) != atomic_load(&specs[i].starts) &&
		       tr_test_now() < end)
			sleep_us(100);

	rc = tr_supervisor_stats(sup, &ss);
	CHECK(rc == TR_OK, "tr_supervisor_stats: %s", tr_err_name(rc));
	for (i = 0; i < BURST_KIDS; i++) {
		starts += atomic_load(&specs[i].starts);
		CHECK_EQ(atomic_load(&specs[i].cleanups), atomic_load(&specs[i].starts),
			 "incarnations stopped vs started");
		CHECK(tr_ref_is_none(tr_supervisor_child(sup, i)), "child %u still published", i);
		CHECK(tr_send((tr_ref){atomic_load(&specs[i].last_ref)}, MSG_WORK, NULL, 0) ==
		      TR_EDEAD, "child %u alive after its supervisor gave up", i);
	}
	CHECK(atomic_load(&w->reason) == TR_ESUPERVISOR, "the supervisor stopped with %s",
	      tr_err_name(atomic_load(&w->reason)));
	CHECK_EQ(ss.escalations, 1, "escalations");
	CHECK_EQ(ss.restarts, BURST_MAX, "restarts before giving up");
	CHECK_EQ(starts, BURST_KIDS + BURST_MAX, "incarnations");
	CHECK_EQ(ss.child_exits, starts, "child exits vs incarnations");
	CHECK_EQ(atomic_load(&w->kid_exits_seen), starts,
		 "child exits handled before the supervisor's DOWN");
	CHECK(atomic_load(&failures) > BURST_MAX, "only %u failures", atomic_load(&failures));
	CHECK(tr_send(sref, MSG_WORK, NULL, 0) == TR_EDEAD, "supervisor still alive");

	rc = tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	/* the supervisor is long gone: exactly one DOWN, ever */
	CHECK_EQ(atomic_load(&w->downs), 1, "DOWNs of the supervisor");
	CHECK(SPECS_SUM(specs, BURST_KIDS, overlap) == 0, "%u overlapping incarnations",
	      SPECS_SUM(specs, BURST_KIDS, overlap));
	CHECK(SPECS_SUM(specs, BURST_KIDS, bad_reason) == 0, "%u cleanups with a wrong reason",
	      SPECS_SUM(specs, BURST_KIDS, bad_reason));
	printf("stress_supervisor: phase 2 round %u: %u failures, %" PRIu64 " restarts, "
	       "%" PRIu64 " exits, gave up with %s\n", round, atomic_load(&failures),
	       ss.restarts, ss.child_exits, tr_err_name(atomic_load(&w->reason)));
out:
	tr_supervisor_release(&sup);
	tr_system_destroy(&sys);
	free(w);
}

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0x5eedc0ffee;
	uint64_t rounds = scale / ROUNDS_PER > ROUNDS_MIN ? scale / ROUNDS_PER : ROUNDS_MIN;

	printf("stress_supervisor: scale %" PRIu64 ", seed %#" PRIx64 "\n", scale, seed);
	phase1(scale, seed);
	for (uint64_t r = 0; r < rounds; r++)
		phase2_round((unsigned)r, seed);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
