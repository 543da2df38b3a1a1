/*
 * stress_timer: many timers armed and cancelled at once.
 *
 * N = max(SCALE / 20, 10^4) one-shot timers with random delays of 0..50 ms
 * are armed by ARMERS actors to TARGETS actors. About half are cancelled
 * by their armer at a random moment: some right after arming, most by a
 * "cancel" message the armer sends itself with another timer of 0..60 ms,
 * so cancels land before, around and after the fire. The payload carries
 * the timer's index, the time just before arming and the delay.
 *
 * Checks, after a graceful shutdown: every timer was armed; no timer fired
 * before its deadline; every timer not cancelled fired exactly once; every
 * cancel returned TR_OK (and that timer never fired) or TR_EDEAD (and it
 * fired exactly once); every cancel message arrived exactly once;
 * timers_fired lies between the messages handled and the timers armed; no
 * dead letters.
 *
 * Usage: stress_timer SCALE [SEED]
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

enum { ARMERS = 8, TARGETS = 32 };
enum { MSG_FIRE = 1, MSG_CANCEL, MSG_MORE };

#define MS 1000000ull
#define MAX_DELAY (50 * MS)
#define MAX_CANCEL_AT (60 * MS)
#define CHUNK 64          /* timers an armer arms per message */
#define INFLIGHT_MAX 50000 /* armed, not yet fired or cancelled (pacing) */
#define DEADLINE_S 300
#define MIN_TIMERS 10000

/* ---- checks ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- timers ---- */

enum { C_NONE = 0, C_NOW, C_LATER };

/* One timer. `t`, `cancel` and `cancel_rc` belong to the armer actor
 * (written and read only while it runs); `hits` to the targets. */
struct tinfo {
	tr_timer t;
	int cancel_rc;
	uint8_t cancel; /* C_* */
	bool armed;
	atomic_uint hits;
	atomic_uint cancel_msgs; /* MSG_CANCEL handled for it */
};

struct fire {
	uint32_t i;
	uint64_t armed_at;
	uint64_t delay;
};

static struct tinfo *timers;
static uint64_t n_timers;
static tr_ref targets[TARGETS];
static tr_system *sys;

static atomic_uint_fast64_t n_fired;      /* MSG_FIRE handled */
static atomic_uint_fast64_t n_early;
static atomic_uint_fast64_t worst_early_ns;
static atomic_uint_fast64_t n_bad_payload;
static atomic_uint_fast64_t n_cancel_ok;   /* cancels that returned TR_OK */
static atomic_uint_fast64_t n_armed;       /* arming (counted just before) */
static atomic_bool give_up;

/* Armed and neither fired nor cancelled; negative if timers fired twice. */
static int64_t inflight(void)
{
	uint64_t done = atomic_load(&n_fired) + atomic_load(&n_cancel_ok);

	return (int64_t)(atomic_load(&n_armed) - done);
}

static int target_fn(void *state, tr_msg *m)
{
	struct fire f;
	uint64_t now = now_ns();

	(void)state;
	if (tr_msg_type(m) != MSG_FIRE || tr_msg_size(m) != sizeof(f) ||
	    !(m->flags & TR_MSG_F_TIMER)) {
		atomic_fetch_add(&n_bad_payload, 1);
		return 0;
	}
	memcpy(&f, tr_msg_data(m), sizeof(f));
	if (f.i >= n_timers) {
		atomic_fetch_add(&n_bad_payload, 1);
		return 0;
	}
	if (now < f.armed_at + f.delay) {
		uint64_t early = f.armed_at + f.delay - now;
		uint64_t w = atomic_load(&worst_early_ns);

		atomic_fetch_add(&n_early, 1);
		while (early > w && !atomic_compare_exchange_weak(&worst_early_ns, &w, early))
			;
	}
	atomic_fetch_add(&timers[f.i].hits, 1);
	atomic_fetch_add(&n_fired, 1);
	return 0;
}

struct armer {
	uint64_t lo, hi, next;
	uint64_t rng;
	uint64_t arm_err, cancel_arm_err, more_err, bad_cancel_msg;
	int first_err;
	uint64_t cancels_pending; /* MSG_CANCEL armed, not yet handled */
	uint64_t pace_timers;     /* MSG_MORE sent with a timer */
	bool arming_done;
	bool finished;
	tr_test_latch *latch;
};

static void do_cancel(struct tinfo *ti)
{
	ti->cancel_rc = tr_timer_cancel(ti->t);
	if (ti->cancel_rc == TR_OK)
		atomic_fetch_add(&n_cancel_ok, 1);
}

static void maybe_finish(struct armer *a)
{
	if (a->arming_done && a->cancels_pending == 0 && !a->finished) {
		a->finished = true;
		tr_test_latch_count_down(a->latch);
	}
}

static void note_err(struct armer *a, uint64_t *counter, int rc)
{
	if ((*counter)++ == 0 && !a->first_err)
		a->first_err = rc;
}

static void arm_some(struct armer *a)
{
	for (unsigned n = 0; n < CHUNK && a->next < a->hi; n++) {
		uint64_t i = a->next++;
		struct tinfo *ti = &timers[i];
		uint64_t r = rnd(&a->rng);
		struct fire f = { (uint32_t)i, 0, r % (MAX_DELAY + 1) };
		tr_ref to = targets[(r >> 32) % TARGETS];
		int rc;

		atomic_fetch_add(&n_armed, 1);
		f.armed_at = now_ns();
		rc = tr_send_after(to, f.delay, MSG_FIRE, &f, sizeof(f), &ti->t);
		if (rc != TR_OK) {
			atomic_fetch_sub(&n_armed, 1);
			note_err(a, &a->arm_err, rc);
			continue;
		}
		ti->armed = true;
		r = rnd(&a->rng);
		if (r & 1)
			continue; /* about half are never cancelled */
		if ((r >> 1) % 8 == 0) {
			ti->cancel = C_NOW;
			do_cancel(ti);
			continue;
		}
		ti->cancel = C_LATER;
		{
			uint32_t idx = (uint32_t)i;
			uint64_t at = (r >> 8) % (MAX_CANCEL_AT + 1);

			rc = tr_send_after(tr_self(), at, MSG_CANCEL, &idx, sizeof(idx), NULL);
		}
		if (rc != TR_OK) {
			ti->cancel = C_NONE;
			note_err(a, &a->cancel_arm_err, rc);
			continue;
		}
		a->cancels_pending++;
	}
}

static int armer_fn(void *state, tr_msg *m)
{
	struct armer *a = state;
	int rc;

	if (tr_msg_type(m) == MSG_CANCEL) {
		uint32_t i;

		memcpy(&i, tr_msg_data(m), sizeof(i));
		if (i < a->lo || i >= a->hi || timers[i].cancel != C_LATER) {
			a->bad_cancel_msg++;
		} else {
			atomic_fetch_add(&timers[i].cancel_msgs, 1);
			if (atomic_load(&timers[i].cancel_msgs) == 1)
				do_cancel(&timers[i]);
			a->cancels_pending--;
		}
		maybe_finish(a);
		return 0;
	}
	if (tr_msg_type(m) != MSG_MORE || a->arming_done)
		return 0;
	/* pace: do not let the timer heap grow without bound; when it is
	 * big, come back in a millisecond (with a timer, counted) */
	if (inflight() < INFLIGHT_MAX) {
		arm_some(a);
		if (a->next < a->hi && !atomic_load(&give_up)) {
			rc = tr_send(tr_self(), MSG_MORE, NULL, 0);
			if (rc == TR_OK)
				return 0;
			note_err(a, &a->more_err, rc);
		}
	} else if (!atomic_load(&give_up)) {
		rc = tr_send_after(tr_self(), MS, MSG_MORE, NULL, 0, NULL);
		if (rc == TR_OK) {
			a->pace_timers++;
			return 0;
		}
		note_err(a, &a->more_err, rc);
	}
	a->arming_done = true;
	maybe_finish(a);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0x7133e5eed;
	static struct armer armers[ARMERS];
	tr_ref aref[ARMERS];
	tr_test_latch finished;
	uint64_t armed = 0, cancel_now = 0, cancel_later = 0, never = 0;
	uint64_t c_ok = 0, c_dead = 0, c_other = 0, bad_hits = 0, bad_cancel_msgs = 0;
	uint64_t arm_err = 0, cancel_arm_err = 0, more_err = 0, bad_cancel_msg = 0;
	uint64_t cancel_msgs = 0, pace = 0, want_fired, i;
	int first_err = 0, first_other = 0, rc;
	double t0 = now_ns() / 1e9;
	bool in_time = false;
	tr_stats st;

	n_timers = scale / 20 < MIN_TIMERS ? MIN_TIMERS : scale / 20;
	printf("stress_timer: scale %" PRIu64 ", %" PRIu64 " timers, seed %#" PRIx64 "\n", scale,
	       n_timers, seed);
	timers = calloc(n_timers, sizeof(*timers));
	tr_test_latch_init(&finished, ARMERS);
	if (!CHECK(timers != NULL, "out of memory"))
		goto out;
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;
	for (unsigned k = 0; k < TARGETS && rc == TR_OK; k++)
		rc = tr_spawn(sys, target_fn, NULL, &targets[k]);
	for (unsigned k = 0; k < ARMERS && rc == TR_OK; k++) {
		armers[k].lo = n_timers * k / ARMERS;
		armers[k].hi = n_timers * (k + 1) / ARMERS;
		armers[k].next = armers[k].lo;
		armers[k].rng = seed ^ (0x9e3779b97f4a7c15ULL * (k + 1));
		armers[k].latch = &finished;
		rc = tr_spawn(sys, armer_fn, &armers[k], &aref[k]);
	}
	if (!CHECK(rc == TR_OK, "spawn: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;
	for (unsigned k = 0; k < ARMERS; k++) {
		rc = tr_send(aref[k], MSG_MORE, NULL, 0);
		if (!CHECK(rc == TR_OK, "start armer %u: %s", k, tr_err_name(rc)))
			tr_test_latch_count_down(&finished);
	}

	/* armers finish once all their timers are armed and every cancel ran */
	in_time = tr_test_latch_wait(&finished, DEADLINE_S);
	CHECK(in_time, "armers not finished within %d s", DEADLINE_S);
	if (!in_time)
		atomic_store(&give_up, true);
	/* every timer not cancelled must fire: wait for them, then give a
	 * wrong extra fire the time to show */
	if (in_time) {
		uint64_t end = now_ns() + (uint64_t)DEADLINE_S * 1000 * MS;

		while (inflight() > 0 && now_ns() < end)
			sleep_us(1000);
		in_time = inflight() <= 0;
		CHECK(in_time, "%" PRId64 " timers neither fired nor cancelled after %d s",
		      inflight(), DEADLINE_S);
		sleep_us((long)((MAX_DELAY + MAX_CANCEL_AT) / 1000) + 50000);
	}

shut:
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* workers are joined: every state is ours to read */
	for (unsigned k = 0; k < ARMERS; k++) {
		arm_err += armers[k].arm_err;
		cancel_arm_err += armers[k].cancel_arm_err;
		more_err += armers[k].more_err;
		bad_cancel_msg += armers[k].bad_cancel_msg;
		pace += armers[k].pace_timers;
		if (!first_err)
			first_err = armers[k].first_err;
	}
	for (i = 0; i < n_timers; i++) {
		struct tinfo *ti = &timers[i];
		unsigned hits = atomic_load(&ti->hits);
		unsigned want;

		if (!ti->armed)
			continue;
		armed++;
		if (ti->cancel == C_NONE) {
			never++;
			want = 1;
		} else {
			if (ti->cancel == C_NOW) {
				cancel_now++;
			} else {
				cancel_later++;
				cancel_msgs += atomic_load(&ti->cancel_msgs);
				if (atomic_load(&ti->cancel_msgs) != 1 && bad_cancel_msgs++ == 0)
					fprintf(stderr, "timer %" PRIu64 ": cancel message arrived %u "
						"times\n", i, atomic_load(&ti->cancel_msgs));
			}
			if (ti->cancel_rc == TR_OK) {
				c_ok++;
				want = 0;
			} else if (ti->cancel_rc == TR_EDEAD) {
				c_dead++;
				want = 1;
			} else {
				if (c_other++ == 0)
					first_other = ti->cancel_rc;
				continue;
			}
		}
		if (hits != want && bad_hits++ < 5)
			fprintf(stderr, "timer %" PRIu64 ": fired %u times, want %u (cancel: %s)\n",
				i, hits, want,
				ti->cancel == C_NONE ? "none" : tr_err_name(ti->cancel_rc));
	}
	want_fired = never + c_dead;

	CHECK(arm_err == 0 && cancel_arm_err == 0 && more_err == 0,
	      "errors: %" PRIu64 " tr_send_after, %" PRIu64 " cancel timers, %" PRIu64
	      " tr_send (first %s)", arm_err, cancel_arm_err, more_err, tr_err_name(first_err));
	CHECK_EQ(armed, n_timers, "timers armed");
	CHECK(atomic_load(&n_early) == 0, "%" PRIu64 " timers fired before their deadline "
	      "(worst by %.3f ms)", (uint64_t)atomic_load(&n_early),
	      atomic_load(&worst_early_ns) / 1e6);
	CHECK(atomic_load(&n_bad_payload) == 0, "%" PRIu64 " malformed timer messages",
	      (uint64_t)atomic_load(&n_bad_payload));
	CHECK(c_other == 0, "%" PRIu64 " cancels returned neither TR_OK nor TR_EDEAD (first %s)",
	      c_other, tr_err_name(first_other));
	CHECK(bad_hits == 0, "%" PRIu64 " timers fired a wrong number of times", bad_hits);
	CHECK(bad_cancel_msg == 0 && bad_cancel_msgs == 0, "cancel messages: %" PRIu64
	      " unexpected, %" PRIu64 " timers with a duplicate or missing one", bad_cancel_msg,
	      bad_cancel_msgs);
	CHECK_EQ(atomic_load(&n_fired), want_fired, "timer messages handled vs uncancelled + "
		 "TR_EDEAD cancels");
	CHECK_EQ(atomic_load(&n_cancel_ok), c_ok, "TR_OK cancels counted twice");
	CHECK(st.timers_fired >= atomic_load(&n_fired) + cancel_msgs + pace &&
	      st.timers_fired <= armed + cancel_later + pace,
	      "timers_fired %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]", st.timers_fired,
	      (uint64_t)atomic_load(&n_fired) + cancel_msgs + pace, armed + cancel_later + pace);
	CHECK_EQ(st.dead_letters, 0, "dead letters");
	CHECK_EQ(st.sent, st.delivered + st.undelivered, "sent vs delivered + undelivered");
	printf("stress_timer: %" PRIu64 " armed, %" PRIu64 " never cancelled, %" PRIu64
	       " cancelled at once, %" PRIu64 " later; cancels %" PRIu64 " TR_OK / %" PRIu64
	       " TR_EDEAD; %" PRIu64 " fired (%" PRIu64 " timer messages), %.2f s\n", armed,
	       never, cancel_now, cancel_later, c_ok, c_dead, (uint64_t)atomic_load(&n_fired),
	       st.timers_fired, now_ns() / 1e9 - t0);
out:
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&finished);
	free(timers);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
