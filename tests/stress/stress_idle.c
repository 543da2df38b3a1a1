/*
 * stress_idle: an idle system sleeps, and wakes when work comes.
 *
 * First some work: ping-pong pairs exchange SCALE / 10 messages, and a
 * "gather" makes every worker run an actor at the same time (each gather
 * actor waits inside its behaviour until all of them are running), so every
 * worker is known to have been busy. Then nothing is sent for a while:
 * every worker must have parked since, the process must burn almost no CPU
 * during one idle second, and no actor may run. Last, new messages must
 * still be handled, with every worker woken up again.
 *
 * Usage: stress_idle SCALE
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

enum { MSG_PING = 1, MSG_PONG, MSG_GATHER };

#define DEADLINE_S 120
#define SETTLE_S 0.5     /* idle time before measuring: spin, then park */
#define IDLE_S 1.0       /* the measured idle stretch */
#define IDLE_CPU_MAX 0.2 /* CPU seconds the whole process may use in it */

/* ---- checks ---- */

static uint64_t parse_scale(int argc, char **argv)
{
	unsigned long long v;
	char *end;

	if (argc < 2)
		return 2000000;
	errno = 0;
	v = strtoull(argv[1], &end, 10);
	if (errno || *end || v == 0) {
		fprintf(stderr, "usage: %s SCALE (a positive integer)\n", argv[0]);
		exit(2);
	}
	return v;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- actors ---- */

static tr_system *sys;
static unsigned n_workers;
static atomic_uint cleanups, bad_cleanups;
static atomic_uint_fast64_t handled, anomalies;

static void on_cleanup(void *state, int reason)
{
	(void)state;
	atomic_fetch_add(&cleanups, 1);
	if (reason != TR_ESHUTDOWN)
		atomic_fetch_add(&bad_cleanups, 1);
}

/* Ping-pong: the server answers, the client counts rounds. */
struct client {
	tr_ref server;
	uint64_t left; /* pings still to send */
	tr_test_latch *done;
};

static int server_fn(void *state, tr_msg *m)
{
	(void)state;
	atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
	if (tr_msg_type(m) != MSG_PING ||
	    tr_send(tr_msg_sender(m), MSG_PONG, NULL, 0) != TR_OK)
		atomic_fetch_add(&anomalies, 1);
	return 0;
}

static int client_fn(void *state, tr_msg *m)
{
	struct client *c = state;

	atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
	if (tr_msg_type(m) != MSG_PONG)
		atomic_fetch_add(&anomalies, 1);
	if (c->left == 0) {
		tr_test_latch_count_down(c->done);
		return 0;
	}
	c->left--;
	if (tr_send(c->server, MSG_PING, NULL, 0) != TR_OK) {
		atomic_fetch_add(&anomalies, 1);
		tr_test_latch_count_down(c->done);
	}
	return 0;
}

/*
 * Gather: each behaviour waits until all n_workers of them are running. At
 * most one runs per worker at a time, so when they all get there every
 * worker is running one: each was woken and busy.
 */
static atomic_uint gathered;
static atomic_bool gather_failed;

static int gather_fn(void *state, tr_msg *m)
{
	double end = tr_test_now() + DEADLINE_S;

	(void)state;
	(void)m;
	atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
	atomic_fetch_add(&gathered, 1);
	while (atomic_load(&gathered) < n_workers) {
		if (tr_test_now() > end) {
			atomic_store(&gather_failed, true);
			break;
		}
	}
	return 0;
}

static int spawn(tr_behaviour fn, void *state, tr_ref *out)
{
	tr_actor_opts o = { .behaviour = fn, .state = state, .cleanup = on_cleanup };

	return tr_spawn_opts(sys, &o, out);
}

/* ---- phases ---- */

static tr_ref *gatherers;
static tr_ref *servers, *clients;
static struct client *cstate;
static tr_test_latch pp_done;

/* Every worker runs a gather actor at once; false if they never all did. */
static bool gather(const char *when)
{
	double end = tr_test_now() + DEADLINE_S;
	unsigned i;
	int rc;

	atomic_store(&gathered, 0);
	atomic_store(&gather_failed, false);
	for (i = 0; i < n_workers; i++) {
		rc = tr_send(gatherers[i], MSG_GATHER, NULL, 0);
		if (rc != TR_OK)
			return CHECK(false, "%s: gather send: %s", when, tr_err_name(rc));
	}
	while (atomic_load(&gathered) < n_workers && tr_test_now() < end)
		sleep_s(0.001);
	return CHECK(atomic_load(&gathered) == n_workers && !atomic_load(&gather_failed),
		     "%s: only %u of %u workers ran an actor at the same time", when,
		     atomic_load(&gathered), n_workers);
}

/* Each pair plays `rounds` ping-pongs; false if they did not finish. */
static bool ping_pong(const char *when, uint64_t rounds)
{
	unsigned i;
	int rc;

	/* The previous round's count is down to zero: reuse the latch. */
	pthread_mutex_lock(&pp_done.mu);
	pp_done.count = n_workers;
	pthread_mutex_unlock(&pp_done.mu);
	for (i = 0; i < n_workers; i++) {
		/* Set before the kick-off message, which orders it for the client. */
		cstate[i].left = rounds;
		cstate[i].done = &pp_done;
		rc = tr_send(clients[i], MSG_PONG, NULL, 0);
		if (rc != TR_OK) {
			fprintf(stderr, "%s: ping-pong send: %s\n", when, tr_err_name(rc));
			atomic_fetch_add(&anomalies, 1);
			tr_test_latch_count_down(&pp_done);
		}
	}
	return CHECK(tr_test_latch_wait(&pp_done, DEADLINE_S),
		     "%s: ping-pong not done within %d s", when, DEADLINE_S);
}

static void worker_stats(tr_worker_stats *ws)
{
	unsigned i;
	int rc;

	for (i = 0; i < n_workers; i++) {
		rc = tr_system_worker_stats(sys, i, &ws[i]);
		if (rc != TR_OK) {
			CHECK(false, "tr_system_worker_stats(%u): %s", i, tr_err_name(rc));
			memset(&ws[i], 0, sizeof(ws[i]));
		}
	}
}

static uint64_t sum_runs(const tr_worker_stats *ws)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < n_workers; i++)
		n += ws[i].runs;
	return n;
}

int main(int argc, char **argv)
{
	uint64_t scale = parse_scale(argc, argv);
	uint64_t rounds = 0;
	tr_worker_stats *ws0 = NULL, *ws1 = NULL, *ws2 = NULL, *ws3 = NULL;
	unsigned i, not_parked = 0, not_woken = 0;
	double cpu0, cpu = -1, t0 = tr_test_now();
	bool ok = false;
	tr_stats st;
	int rc = TR_OK;

	tr_test_latch_init(&pp_done, 0);
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;
	n_workers = tr_system_workers(sys);
	if (!CHECK(n_workers > 0, "no workers"))
		goto out;
	gatherers = calloc(n_workers, sizeof(*gatherers));
	servers = calloc(n_workers, sizeof(*servers));
	clients = calloc(n_workers, sizeof(*clients));
	cstate = calloc(n_workers, sizeof(*cstate));
	ws0 = calloc(4 * (size_t)n_workers, sizeof(*ws0));
	if (!CHECK(gatherers && servers && clients && cstate && ws0, "out of memory"))
		goto out;
	ws1 = ws0 + n_workers;
	ws2 = ws1 + n_workers;
	ws3 = ws2 + n_workers;
	for (i = 0; i < n_workers && rc == TR_OK; i++) {
		rc = spawn(gather_fn, NULL, &gatherers[i]);
		if (rc == TR_OK)
			rc = spawn(server_fn, NULL, &servers[i]);
		cstate[i].server = servers[i];
		if (rc == TR_OK)
			rc = spawn(client_fn, &cstate[i], &clients[i]);
	}
	if (!CHECK(rc == TR_OK, "spawn: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;

	/* Work: every worker busy at least once, then plenty of messages. */
	worker_stats(ws0);
	rounds = scale / 20 / n_workers ? scale / 20 / n_workers : 1;
	if (!gather("work") || !ping_pong("work", rounds))
		goto shut;

	/* Idle: settle, then measure one quiet stretch. */
	sleep_s(SETTLE_S);
	worker_stats(ws1);
	cpu0 = cpu_now();
	sleep_s(IDLE_S);
	cpu = cpu_now() - cpu0;
	worker_stats(ws2);
	CHECK(cpu < IDLE_CPU_MAX, "idle: %.3f s of CPU in %.1f s with nothing to do "
	      "(bound %.1f s)", cpu, IDLE_S, IDLE_CPU_MAX);
	CHECK(sum_runs(ws2) == sum_runs(ws1), "idle: %" PRIu64 " actor runs with no message "
	      "sent", sum_runs(ws2) - sum_runs(ws1));
	for (i = 0; i < n_workers; i++) {
		if (ws2[i].parks <= ws0[i].parks && not_parked++ == 0)
			fprintf(stderr, "worker %u: parks %" PRIu64 " before the work, %" PRIu64
				" after it and %.1f s idle\n", i, ws0[i].parks, ws2[i].parks,
				SETTLE_S + IDLE_S);
	}
	CHECK(not_parked == 0, "idle: %u of %u workers did not park after the work",
	      not_parked, n_workers);

	/* Wake: new work must be handled, by workers woken from their sleep. */
	if (!gather("wake") || !ping_pong("wake", 1000))
		goto shut;
	worker_stats(ws3);
	for (i = 0; i < n_workers; i++) {
		if (ws3[i].wakeups <= ws2[i].wakeups && not_woken++ == 0)
			fprintf(stderr, "worker %u: wakeups %" PRIu64 " when idle, %" PRIu64
				" after new work\n", i, ws2[i].wakeups, ws3[i].wakeups);
	}
	CHECK(not_woken == 0, "wake: %u of %u workers ran new work without a wakeup",
	      not_woken, n_workers);
	ok = true;

shut:
	rc = tr_system_shutdown(sys, ok ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));
	CHECK(atomic_load(&anomalies) == 0, "%" PRIu64 " unexpected messages or failed sends",
	      (uint64_t)atomic_load(&anomalies));
	CHECK_EQ(st.delivered, atomic_load(&handled), "stats.delivered vs messages handled");
	CHECK_EQ(st.sent, st.delivered, "stats.sent vs stats.delivered");
	CHECK(st.dead_letters == 0 && st.undelivered == 0,
	      "dead letters %" PRIu64 ", undelivered %" PRIu64, st.dead_letters,
	      st.undelivered);
	CHECK(st.spawned == 3 * (uint64_t)n_workers && st.stopped == st.spawned &&
	      st.alive == 0 && atomic_load(&cleanups) == st.spawned &&
	      atomic_load(&bad_cleanups) == 0,
	      "spawned %" PRIu64 ", stopped %" PRIu64 ", alive %" PRIu64 ", cleanups %u "
	      "(%u with a wrong reason)", st.spawned, st.stopped, st.alive,
	      atomic_load(&cleanups), atomic_load(&bad_cleanups));
	printf("stress_idle: %u workers, %" PRIu64 " ping-pongs each, %.3f s CPU in the idle "
	       "second, %.2f s\n", n_workers, rounds, cpu, tr_test_now() - t0);
out:
	tr_system_destroy(&sys);
	free(gatherers);
	free(servers);
	free(clients);
	free(cstate);
	free(ws0);
	tr_test_latch_destroy(&pp_done);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
