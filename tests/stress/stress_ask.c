/*
 * stress_ask: request/response under load, with timeouts and dying servers.
 *
 * SCALE / 2 requests in all. ASKERS actors keep WINDOW requests each in
 * flight with tr_ask (the continuation records the outcome and asks the
 * next one); THREADS plain threads ask with tr_ask_future in batches of
 * BATCH, collected alternately with tr_future_wait_all and as completed
 * with tr_future_wait_any. Each request goes to one of SLOTS server slots
 * with a random (seeded) timeout and tells its server how to answer: at
 * once, late (after a timer of 0..MAX_LATE), or not at all because the
 * server dies on it: it puts a fresh server in its slot and fails, so the
 * request and those queued behind it end "receiver down".
 *
 * Checks: every request ends exactly once (a per-request counter of
 * outcomes must be 1), with TR_OK and its own reply, TR_ETIMEDOUT (never
 * before its timeout) or TR_EDEAD; every tr_ask / tr_ask_future call was
 * accepted; late_replies equals the replies the servers got accepted
 * minus the requests a reply decided (a reply to a future already
 * destroyed is refused with TR_EDEAD, a dead letter); actors spawned and
 * stopped add up. Run under ASan for leaks.
 *
 * Usage: stress_ask SCALE [SEED]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
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

enum { ASKERS = 8, THREADS = 2, SLOTS = 16, WINDOW = 128, BATCH = 256 };
enum { MSG_REQ = 1, MSG_REP, MSG_LATE, MSG_START };
enum { M_NOW, M_LATE, M_DIE };

#define MS 1000000ull
#define MAX_LATE (20 * MS)
#define DIE_ONE_IN 2000
#define FAIL_REASON 99
#define DEADLINE_S 600

/* ---- checks ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- shared state ---- */

struct req {
	uint32_t id;
	uint8_t mode;
	uint64_t late_ns;
};

struct late {
	tr_reply_addr rt;
	uint32_t id;
};

static tr_system *sys;
static uint64_t n_req;
static _Atomic uint8_t *outcomes;    /* per request: outcomes seen */
static uint64_t *asked_at;           /* per request: time before asking */
static uint64_t *timeout_of;         /* per request */
static _Atomic uint64_t slot[SLOTS]; /* current server of each slot */
static atomic_uint n_servers;        /* servers spawned */
static unsigned max_servers;
static atomic_bool give_up;

/* outcome tallies */
static atomic_uint_fast64_t n_ok, n_timedout, n_dead, n_other, n_wrong_reply, n_early;
static atomic_uint_fast64_t n_done;
/* reply tallies (servers) */
static atomic_uint_fast64_t rep_ok, rep_future_refused, rep_other;
static atomic_uint_fast64_t n_late_armed, n_late_fired, n_deaths, n_spawn_err;
static atomic_int first_other_status, first_rep_err;

static void record(uint32_t id, int status, const tr_msg *reply)
{
	uint64_t now = now_ns();
	uint32_t got;

	atomic_fetch_add(&outcomes[id], 1);
	switch (status) {
	case TR_OK:
		atomic_fetch_add(&n_ok, 1);
		if (!reply || tr_msg_size(reply) != sizeof(got)) {
			atomic_fetch_add(&n_wrong_reply, 1);
			break;
		}
		memcpy(&got, tr_msg_data(reply), sizeof(got));
		if (got != id)
			atomic_fetch_add(&n_wrong_reply, 1);
		break;
	case TR_ETIMEDOUT:
		atomic_fetch_add(&n_timedout, 1);
		if (now - asked_at[id] < timeout_of[id])
			atomic_fetch_add(&n_early, 1);
		break;
	case TR_EDEAD:
		atomic_fetch_add(&n_dead, 1);
		break;
	default: {
		int zero = 0;

		atomic_compare_exchange_strong(&first_other_status, &zero, status);
		atomic_fetch_add(&n_other, 1);
	}
	}
	atomic_fetch_add(&n_done, 1);
}

/* Fills in a random request; returns the server to ask. */
static tr_ref make_req(uint64_t *rng, uint32_t id, struct req *q, uint64_t *timeout)
{
	uint64_t r = rnd(rng);

	q->id = id;
	q->mode = M_NOW;
	q->late_ns = 0;
	if (r % DIE_ONE_IN == 0)
		q->mode = M_DIE;
	else if ((r >> 12) % 8 == 0)
		q->mode = M_LATE;
	q->late_ns = (r >> 16) % (MAX_LATE + 1);
	/* a quarter short (1..10 ms, late replies race them), the rest long */
	if ((r >> 40) % 4 == 0)
		*timeout = MS + (r >> 24) % (9 * MS);
	else
		*timeout = 10 * MS + (r >> 24) % (490 * MS);
	timeout_of[id] = *timeout;
	return (tr_ref){ atomic_load(&slot[(r >> 48) % SLOTS]) };
}

/* ---- servers ---- */

static void count_reply(int rc, bool to_future)
{
	int zero = 0;

	if (rc == TR_OK) {
		atomic_fetch_add(&rep_ok, 1);
	} else if (rc == TR_EDEAD && to_future) {
		/* the future was destroyed after its outcome: the asker is
		 * gone (a dead letter, not a late reply) */
		atomic_fetch_add(&rep_future_refused, 1);
	} else {
		atomic_compare_exchange_strong(&first_rep_err, &zero, rc);
		atomic_fetch_add(&rep_other, 1);
	}
}

static int server_fn(void *state, tr_msg *m);

static int spawn_server(unsigned s)
{
	tr_ref r;
	int rc;

	if (atomic_fetch_add(&n_servers, 1) >= max_servers) {
		atomic_fetch_sub(&n_servers, 1);
		return TR_ELIMIT;
	}
	rc = tr_spawn(sys, server_fn, (void *)(uintptr_t)s, &r);
	if (rc != TR_OK) {
		atomic_fetch_sub(&n_servers, 1);
		return rc;
	}
	atomic_store(&slot[s], r.id);
	return TR_OK;
}

static int server_fn(void *state, tr_msg *m)
{
	unsigned s = (unsigned)(uintptr_t)state;
	struct req q;
	int rc;

	if (tr_msg_type(m) == MSG_LATE) {
		struct late l;

		memcpy(&l, tr_msg_data(m), sizeof(l));
		atomic_fetch_add(&n_late_fired, 1);
		count_reply(tr_reply_to(l.rt, MSG_REP, &l.id, sizeof(l.id)), l.rt.to == 0);
		return 0;
	}
	if (!tr_msg_is_request(m) || tr_msg_size(m) != sizeof(q))
		return 0;
	memcpy(&q, tr_msg_data(m), sizeof(q));
	switch (q.mode) {
	case M_DIE:
		/* only the slot's current server can be replaced by it */
		if (atomic_load(&slot[s]) == tr_self().id) {
			rc = spawn_server(s);
			if (rc == TR_OK) {
				atomic_fetch_add(&n_deaths, 1);
				return FAIL_REASON;
			}
			if (rc != TR_ELIMIT)
				atomic_fetch_add(&n_spawn_err, 1);
		}
		/* fall through - out of servers: answer normally */
	case M_NOW:
		count_reply(tr_reply(m, MSG_REP, &q.id, sizeof(q.id)),
			    tr_msg_reply_to(m).to == 0);
		break;
	case M_LATE: {
		struct late l = { tr_msg_reply_to(m), q.id };

		rc = tr_send_after(tr_self(), q.late_ns, MSG_LATE, &l, sizeof(l), NULL);
		if (rc == TR_OK)
			atomic_fetch_add(&n_late_armed, 1);
		else
			count_reply(rc, false);
		break;
	}
	}
	return 0;
}

/* ---- actor askers ---- */

struct asker {
	uint64_t lo, hi, next;
	uint64_t rng;
	uint64_t done;
	uint64_t ask_err;
	int first_err;
	tr_test_latch *finished;
};

static int on_reply(void *state, void *ctx, int status, tr_msg *reply);

static void ask_next(struct asker *a)
{
	while (a->next < a->hi && !atomic_load(&give_up)) {
		uint32_t id = (uint32_t)a->next++;
		struct req q;
		uint64_t timeout;
		tr_ref to = make_req(&a->rng, id, &q, &timeout);
		int rc;

		asked_at[id] = now_ns();
		rc = tr_ask(to, MSG_REQ, &q, sizeof(q), timeout, on_reply, (void *)(uintptr_t)id);
		if (rc == TR_OK)
			return;
		if (a->ask_err++ == 0)
			a->first_err = rc;
		a->done++; /* never asked: counts as finished, reported below */
	}
	if (a->done == a->hi - a->lo || atomic_load(&give_up)) {
		if (a->finished) {
			tr_test_latch_count_down(a->finished);
			a->finished = NULL;
		}
	}
}

static int on_reply(void *state, void *ctx, int status, tr_msg *reply)
{
	struct asker *a = state;

	record((uint32_t)(uintptr_t)ctx, status, reply);
	a->done++;
	ask_next(a);
	return 0;
}

static int asker_fn(void *state, tr_msg *m)
{
	struct asker *a = state;

	if (tr_msg_type(m) == MSG_START) {
		for (unsigned i = 0; i < WINDOW && a->next < a->hi; i++)
			ask_next(a);
		if (a->lo == a->hi)
			ask_next(a);
	}
	return 0;
}

/* ---- thread askers (futures) ---- */

struct fasker {
	uint64_t lo, hi;
	uint64_t rng;
	uint64_t ask_err, wait_err, batches_all, batches_any;
	int first_err;
	pthread_t th;
};

static void *fasker_main(void *arg)
{
	struct fasker *f = arg;
	tr_future *fs[BATCH];
	uint32_t ids[BATCH];
	uint64_t next = f->lo;
	unsigned batch = 0;

	while (next < f->hi && !atomic_load(&give_up)) {
		size_t n = 0;

		/* fs[0..n) are the futures of this batch, none NULL */
		for (unsigned k = 0; k < BATCH && next < f->hi; k++) {
			uint32_t id = (uint32_t)next++;
			struct req q;
			uint64_t timeout;
			tr_ref to = make_req(&f->rng, id, &q, &timeout);
			int rc;

			ids[n] = id;
			fs[n] = NULL;
			asked_at[id] = now_ns();
			rc = tr_ask_future(to, MSG_REQ, &q, sizeof(q), timeout, &fs[n]);
			if (rc == TR_OK && fs[n]) {
				n++;
			} else {
				if (f->ask_err++ == 0)
					f->first_err = rc;
				atomic_fetch_add(&n_done, 1);
			}
		}
		if (!n)
			continue;
		if (batch++ % 2 == 0) {
			/* all at once, results in order */
			f->batches_all++;
			if (tr_future_wait_all(fs, n, (int64_t)DEADLINE_S * 1000000000) != TR_OK)
				f->wait_err++;
			for (size_t i = 0; i < n; i++) {
				if (!fs[i])
					continue;
				record(ids[i], tr_future_poll(fs[i]), tr_future_reply(fs[i]));
				tr_future_destroy(&fs[i]);
			}
		} else {
			/* as completed */
			size_t left = 0, idx;

			f->batches_any++;
			for (size_t i = 0; i < n; i++)
				left += fs[i] != NULL;
			while (left) {
				int rc = tr_future_wait_any(fs, n, (int64_t)DEADLINE_S * 1000000000,
							    &idx);

				if (rc != TR_OK || idx >= n || !fs[idx]) {
					f->wait_err++;
					break;
				}
				rc = tr_future_poll(fs[idx]);
				if (rc == TR_EAGAIN) {
					f->wait_err++; /* wait_any named a pending future */
					break;
				}
				record(ids[idx], rc, tr_future_reply(fs[idx]));
				tr_future_destroy(&fs[idx]);
				left--;
			}
			for (size_t i = 0; i < n; i++)
				if (fs[i])
					tr_future_destroy(&fs[i]);
		}
	}
	return NULL;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0xa5c0ffee;
	static struct asker askers[ASKERS];
	static struct fasker faskers[THREADS];
	tr_ref aref[ASKERS];
	tr_test_latch finished;
	uint64_t ask_err = 0, wait_err = 0, not_once = 0, never = 0, twice = 0, thread_share;
	unsigned started = 0, i;
	int first_err = 0, rc;
	uint64_t t0 = now_ns();
	bool in_time = false;
	tr_stats st;

	n_req = scale / 2;
	if (n_req > UINT32_MAX)
		n_req = UINT32_MAX;
	thread_share = n_req / 32; /* futures wait for whole batches: slower */
	max_servers = SLOTS + (unsigned)(n_req / DIE_ONE_IN) * 2 + 64;
	printf("stress_ask: scale %" PRIu64 ", %" PRIu64 " requests, seed %#" PRIx64 "\n", scale,
	       n_req, seed);
	outcomes = calloc(n_req, sizeof(*outcomes));
	asked_at = calloc(n_req, sizeof(*asked_at));
	timeout_of = calloc(n_req, sizeof(*timeout_of));
	tr_test_latch_init(&finished, ASKERS);
	if (!CHECK(outcomes && asked_at && timeout_of, "out of memory"))
		goto out;
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;
	for (i = 0; i < SLOTS && rc == TR_OK; i++)
		rc = spawn_server(i);
	for (i = 0; i < ASKERS && rc == TR_OK; i++) {
		uint64_t span = n_req - thread_share;

		askers[i].lo = span * i / ASKERS;
		askers[i].hi = span * (i + 1) / ASKERS;
		askers[i].next = askers[i].lo;
		askers[i].rng = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
		askers[i].finished = &finished;
		rc = tr_spawn(sys, asker_fn, &askers[i], &aref[i]);
	}
	if (!CHECK(rc == TR_OK, "spawn: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;
	for (i = 0; i < ASKERS; i++) {
		rc = tr_send(aref[i], MSG_START, NULL, 0);
		if (!CHECK(rc == TR_OK, "start asker %u: %s", i, tr_err_name(rc)))
			tr_test_latch_count_down(&finished);
	}
	for (i = 0; i < THREADS; i++) {
		struct fasker *f = &faskers[i];

		f->lo = n_req - thread_share + thread_share * i / THREADS;
		f->hi = n_req - thread_share + thread_share * (i + 1) / THREADS;
		f->rng = seed ^ (0xc2b2ae3d27d4eb4fULL * (i + 1));
		if (pthread_create(&f->th, NULL, fasker_main, f) != 0)
			break;
		started++;
	}
	CHECK(started == THREADS, "started %u of %d asker threads", started, THREADS);

	in_time = tr_test_latch_wait(&finished, DEADLINE_S);
	CHECK(in_time, "actor askers not finished within %d s", DEADLINE_S);
	if (!in_time)
		atomic_store(&give_up, true);
	for (i = 0; i < started; i++)
		pthread_join(faskers[i].th, NULL);
	/* let the late replies still on their timers come in, and count */
	if (in_time) {
		uint64_t end = now_ns() + (uint64_t)DEADLINE_S * 1000 * MS;

		sleep_us((long)(MAX_LATE / 1000) + 50000);
		while (atomic_load(&n_late_fired) < atomic_load(&n_late_armed) &&
		       atomic_load(&n_deaths) == 0 && now_ns() < end)
			sleep_us(1000);
	}

shut:
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	for (i = 0; i < ASKERS; i++) {
		ask_err += askers[i].ask_err;
		if (!first_err)
			first_err = askers[i].first_err;
	}
	for (i = 0; i < THREADS; i++) {
		ask_err += faskers[i].ask_err;
		wait_err += faskers[i].wait_err;
		if (!first_err)
			first_err = faskers[i].first_err;
	}
	for (uint64_t id = 0; id < n_req; id++) {
		unsigned n = atomic_load(&outcomes[id]);

		if (n == 1)
			continue;
		not_once++;
		never += n == 0;
		twice += n > 1;
		if (not_once <= 5)
			fprintf(stderr, "request %" PRIu64 ": %u outcomes\n", id, n);
	}

	CHECK(ask_err == 0, "%" PRIu64 " tr_ask / tr_ask_future calls refused (first %s)",
	      ask_err, tr_err_name(first_err));
	CHECK(wait_err == 0, "%" PRIu64 " wait_all / wait_any failures", wait_err);
	CHECK(not_once == 0, "%" PRIu64 " requests did not end exactly once (%" PRIu64
	      " never, %" PRIu64 " more than once)", not_once, never, twice);
	CHECK_EQ(atomic_load(&n_done), n_req, "outcomes recorded");
	CHECK(atomic_load(&n_other) == 0, "%" PRIu64 " outcomes with an unexpected status "
	      "(first %s)", (uint64_t)atomic_load(&n_other),
	      tr_err_name(atomic_load(&first_other_status)));
	CHECK(atomic_load(&n_wrong_reply) == 0, "%" PRIu64 " requests got another's reply",
	      (uint64_t)atomic_load(&n_wrong_reply));
	CHECK(atomic_load(&n_early) == 0, "%" PRIu64 " requests timed out before their timeout",
	      (uint64_t)atomic_load(&n_early));
	CHECK(atomic_load(&rep_other) == 0, "%" PRIu64 " replies refused unexpectedly (first %s)",
	      (uint64_t)atomic_load(&rep_other), tr_err_name(atomic_load(&first_rep_err)));
	CHECK(atomic_load(&n_spawn_err) == 0, "%" PRIu64 " replacement spawns failed",
	      (uint64_t)atomic_load(&n_spawn_err));
	CHECK(atomic_load(&n_ok) > 0 && atomic_load(&n_timedout) > 0,
	      "the mix did not produce both replies and timeouts");
	if (in_time)
		CHECK_EQ(st.late_replies, atomic_load(&rep_ok) - atomic_load(&n_ok),
			 "late_replies vs replies accepted - outcomes a reply decided");
	CHECK(st.dead_letters >= atomic_load(&rep_future_refused), "%" PRIu64 " replies to "
	      "destroyed futures refused, but only %" PRIu64 " dead letters",
	      (uint64_t)atomic_load(&rep_future_refused), st.dead_letters);
	CHECK(st.spawned == atomic_load(&n_servers) + ASKERS && st.stopped == st.spawned &&
	      st.alive == 0, "spawned %" PRIu64 " (want %u), stopped %" PRIu64 ", alive %" PRIu64,
	      st.spawned, atomic_load(&n_servers) + ASKERS, st.stopped, st.alive);
	printf("stress_ask: %" PRIu64 " ok, %" PRIu64 " timed out, %" PRIu64 " receiver down; "
	       "%" PRIu64 " replies accepted (%" PRIu64 " late), %" PRIu64 " to destroyed futures, "
	       "%" PRIu64 " server deaths, %.2f s\n",
	       (uint64_t)atomic_load(&n_ok), (uint64_t)atomic_load(&n_timedout),
	       (uint64_t)atomic_load(&n_dead), (uint64_t)atomic_load(&rep_ok), st.late_replies,
	       (uint64_t)atomic_load(&rep_future_refused), (uint64_t)atomic_load(&n_deaths),
	       (now_ns() - t0) / 1e9);
out:
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&finished);
	free(outcomes);
	free(asked_at);
	free(timeout_of);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
