/*
 * demo_pingring: a tour of troupe in three phases.
 *
 *   pingpong  two actors bounce an integer back and forth
 *   ring      a token travels round a ring of actors
 *   fan-in    several producers flood one counter actor
 *
 * The actors report their own progress, at every 20% of their phase, by
 * message to a reporter actor, which prints it. The main thread is not an
 * actor: it starts a phase, sleeps on a latch until the reporter says the
 * phase is complete, checks the result and prints the phase's rate. At the
 * end it prints the system's counters.
 *
 * Every actor owns its state (calloc'ed) and frees it in its cleanup hook,
 * which the runtime calls exactly once when the actor stops.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <troupe.h>

/* Sizes: a few seconds in a release build on two cores. */
#define PINGPONG_MSGS 20000000u
#define RING_NODES 1000u
#define RING_HOPS 30000000u
#define FANIN_PRODUCERS 4u
#define FANIN_PER_PRODUCER 1000000u

/* Progress is reported at every 1/MARKS of a phase. */
#define MARKS 5u

/*
 * A producer sends CHUNK messages for each message it handles and then sends
 * itself MSG_MORE, rather than all of them in one call: between two messages
 * the runtime may run other actors on that worker (it switches after `batch`
 * messages, tr_config), so no producer holds a worker for a whole phase.
 */
#define CHUNK 1000u

/* A phase that takes longer than this is hung. */
#define PHASE_LIMIT_S 60

enum msg_type {
	MSG_INT = 1,  /* uint64_t: a ping, a token, a value */
	MSG_START,    /* no payload: begin working */
	MSG_MORE,     /* no payload: a producer's note to itself */
	MSG_PHASE,    /* struct phase_msg, to the reporter */
	MSG_PROGRESS, /* struct progress_msg, to the reporter */
};

/* A new phase begins (main -> reporter). Small structs travel inline. */
struct phase_msg {
	const char *name; /* a string literal: outlives the message */
	const char *unit;
	uint64_t total;
	double t0;
};

/* `done` units of the phase are done (actor -> reporter). */
struct progress_msg {
	uint64_t done;
	uint64_t check; /* the phase's checksum so far; the final one is verified */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "demo_pingring: %s: %s\n", what, tr_strerror(err));
	exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p) {
		fprintf(stderr, "demo_pingring: out of memory\n");
		exit(1);
	}
	return p;
}

/* -- the latch main sleeps on ------------------------------------------- */

static struct latch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	bool failed;
	uint64_t check;
} latch = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, 0 };

static void latch_post(bool failed, uint64_t check)
{
	pthread_mutex_lock(&latch.mu);
	latch.done = true;
	latch.failed |= failed; /* a failure is never overwritten */
	latch.check = check;
	pthread_cond_signal(&latch.cv);
	pthread_mutex_unlock(&latch.mu);
}

/* Waits for the phase to complete; returns its checksum. Exits on failure. */
static uint64_t latch_wait(void)
{
	struct timespec deadline;
	uint64_t check;

	/* the default condvar clock is CLOCK_REALTIME */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += PHASE_LIMIT_S;
	pthread_mutex_lock(&latch.mu);
	while (!latch.done)
		if (pthread_cond_timedwait(&latch.cv, &latch.mu, &deadline))
			break;
	if (!latch.done || latch.failed) {
		fprintf(stderr, "demo_pingring: phase %s\n",
			latch.done ? "failed" : "timed out");
		exit(1);
	}
	check = latch.check;
	latch.done = false;
	pthread_mutex_unlock(&latch.mu);
	return check;
}

/* -- helpers for actors -------------------------------------------------- */

/*
 * The cleanup hook of every actor here. `reason` says why it stopped: TR_OK
 * (tr_stop, tr_stop_self), TR_ESHUTDOWN (the system stopped it), or what its
 * behaviour returned when it failed, which ends the demo.
 */
static void actor_stopped(void *state, int reason)
{
	free(state);
	if (reason != TR_OK && reason != TR_ESHUTDOWN) {
		fprintf(stderr, "demo_pingring: an actor failed: %s\n", tr_strerror(reason));
		latch_post(true, 0);
	}
}

/* Spawns an actor that owns `state`. */
static tr_ref spawn(tr_system *sys, tr_behaviour behaviour, void *state)
{
	tr_actor_opts opts = {
		.behaviour = behaviour,
		.state = state,
		.cleanup = actor_stopped,
	};
	tr_ref ref;
	int err = tr_spawn_opts(sys, &opts, &ref);

	if (err)
		die("tr_spawn", err);
	return ref;
}

/* Main stops the actors of a finished phase; one may have stopped itself. */
static void stop(tr_ref ref)
{
	int err = tr_stop(ref);

	if (err && err != TR_EDEAD)
		die("tr_stop", err);
}

static int send_u64(tr_ref to, uint64_t x)
{
	return tr_send(to, MSG_INT, &x, sizeof x);
}

/* A MSG_INT's integer. */
static uint64_t msg_u64(const tr_msg *m)
{
	const uint64_t *x = tr_msg_data(m);

	return *x;
}

/* True when `done` (>= 1) of `total` has just reached one of the marks. */
static bool at_mark(uint64_t done, uint64_t total)
{
	return done * MARKS / total != (done - 1) * MARKS / total;
}

static int report(tr_ref reporter, uint64_t done, uint64_t check)
{
	struct progress_msg p = { .done = done, .check = check };

	return tr_send(reporter, MSG_PROGRESS, &p, sizeof p);
}

/* -- the reporter ---------------------------------------------------------- */

struct reporter {
	struct phase_msg phase;
	uint64_t shown; /* progress printed so far in this phase */
};

static int reporter_recv(void *state, tr_msg *m)
{
	struct reporter *r = state;
	const struct progress_msg *p;

	if (tr_msg_type(m) == MSG_PHASE) {
		r->phase = *(const struct phase_msg *)tr_msg_data(m);
		r->shown = 0;
		return 0;
	}
	p = tr_msg_data(m);
	/* reports of one phase come from several actors; keep the line monotonic */
	if (p->done <= r->shown)
		return 0;
	r->shown = p->done;
	printf("  %-8s %3" PRIu64 "%%  %9" PRIu64 " / %" PRIu64 " %s  %6.3f s\n",
	       r->phase.name, 100 * p->done / r->phase.total, p->done,
	       r->phase.total, r->phase.unit, now() - r->phase.t0);
	fflush(stdout);
	if (p->done == r->phase.total)
		latch_post(false, p->check);
	return 0;
}

/* Tells the reporter a phase begins; returns its start time. */
static double phase_begin(tr_ref reporter, const char *name, const char *unit,
			  uint64_t total)
{
	struct phase_msg ph = { name, unit, total, now() };
	int err;

	printf("%s: %" PRIu64 " %s\n", name, total, unit);
	fflush(stdout);
	err = tr_send(reporter, MSG_PHASE, &ph, sizeof ph);
	if (err)
		die("tr_send", err);
	return ph.t0;
}

/* Waits for the phase, verifies its checksum and prints its rate. */
static void phase_end(const char *name, const char *unit, uint64_t total,
		      double t0, uint64_t want)
{
	uint64_t check = latch_wait();
	double secs = now() - t0;

	if (check != want) {
		fprintf(stderr, "demo_pingring: %s: checksum %" PRIu64 ", want %" PRIu64 "\n",
			name, check, want);
		exit(1);
	}
	printf("  %-8s done in %.3f s: %.2f M %s/s\n\n", name, secs,
	       (double)total / secs / 1e6, unit);
	fflush(stdout);
}

/* -- phase 1: pingpong ----------------------------------------------------- */

/* Answers each integer with the same integer, to whoever sent it. */
static int pong_recv(void *state, tr_msg *m)
{
	(void)state;
	return send_u64(tr_msg_sender(m), msg_u64(m));
}

struct pinger {
	tr_ref pong, reporter;
	uint64_t rounds, received;
};

/*
 * The init hook runs inside tr_spawn; the pinger serves the first ball from
 * there. The runtime holds any reply until init has returned.
 */
static int ping_init(void *state)
{
	struct pinger *p = state;

	return send_u64(p->pong, 1);
}

static int ping_recv(void *state, tr_msg *m)
{
	struct pinger *p = state;
	uint64_t x = msg_u64(m);
	int err;

	if (x != ++p->received)
		return TR_EFAILED; /* out of order: the cleanup hook reports it */
	/* a round trip is two messages */
	if (at_mark(x, p->rounds) && (err = report(p->reporter, 2 * x, x)))
		return err;
	if (x == p->rounds)
		return tr_stop_self(TR_OK);
	return send_u64(p->pong, x + 1);
}

static void phase_pingpong(tr_system *sys, tr_ref reporter)
{
	const uint64_t rounds = PINGPONG_MSGS / 2;
	struct pinger *p = xcalloc(1, sizeof *p);
	tr_actor_opts opts = {
		.behaviour = ping_recv,
		.state = p,
		.init = ping_init,
		.cleanup = actor_stopped,
	};
	tr_ref ping, pong;
	double t0;
	int err;

	t0 = phase_begin(reporter, "pingpong", "msgs", 2 * rounds);
	pong = spawn(sys, pong_recv, NULL);
	*p = (struct pinger){ .pong = pong, .reporter = reporter, .rounds = rounds };
	if ((err = tr_spawn_opts(sys, &opts, &ping)))
		die("tr_spawn", err);
	phase_end("pingpong", "msgs", 2 * rounds, t0, rounds);
	stop(ping);
	stop(pong);
}

/* -- phase 2: ring --------------------------------------------------------- */

struct ring_node {
	tr_ref next, reporter;
	uint64_t index, hops;
};

/* The token counts its hops; the node that gets the last one keeps it. */
static int ring_recv(void *state, tr_msg *m)
{
	struct ring_node *n = state;
	uint64_t token = msg_u64(m);
	int err;

	/* the checksum is the node's index: the last must be hops % nodes */
	if (token > 0 && at_mark(token, n->hops) && (err = report(n->reporter, token, n->index)))
		return err;
	if (token == n->hops)
		return 0;
	return send_u64(n->next, token + 1);
}

static void phase_ring(tr_system *sys, tr_ref reporter)
{
	tr_ref *refs = xcalloc(RING_NODES, sizeof *refs);
	struct ring_node *prev = NULL;
	double t0;
	unsigned i;
	int err;

	t0 = phase_begin(reporter, "ring", "hops", RING_HOPS);
	for (i = 0; i < RING_NODES; i++) {
		struct ring_node *n = xcalloc(1, sizeof *n);

		*n = (struct ring_node){ .reporter = reporter, .index = i, .hops = RING_HOPS };
		refs[i] = spawn(sys, ring_recv, n);
		/*
		 * No node runs before it gets a message, so main may still
		 * link them through their state; the token's sends make the
		 * writes visible to each node.
		 */
		if (prev)
			prev->next = refs[i];
		prev = n;
	}
	prev->next = refs[0];
	err = send_u64(refs[0], 0);
	if (err)
		die("tr_send", err);
	phase_end("ring", "hops", RING_HOPS, t0, RING_HOPS % RING_NODES);
	for (i = 0; i < RING_NODES; i++)
		stop(refs[i]);
	free(refs);
}

/* -- phase 3: fan-in ------------------------------------------------------- */

struct producer {
	tr_ref counter;
	uint64_t count, sent;
};

/* Sends 0 .. count-1 to the counter, CHUNK per message it gets, then stops. */
static int producer_recv(void *state, tr_msg *m)
{
	struct producer *p = state;
	uint64_t end = p->sent + CHUNK < p->count ? p->sent + CHUNK : p->count;
	int err;

	(void)m; /* MSG_START or MSG_MORE: both mean "send the next chunk" */
	for (; p->sent < end; p->sent++)
		if ((err = send_u64(p->counter, p->sent)))
			return err;
	if (p->sent < p->count)
		return tr_send(tr_self(), MSG_MORE, NULL, 0);
	return tr_stop_self(TR_OK);
}

struct counter {
	tr_ref reporter;
	uint64_t total, count, sum;
};

static int counter_recv(void *state, tr_msg *m)
{
	struct counter *c = state;

	c->sum += msg_u64(m);
	if (at_mark(++c->count, c->total))
		return report(c->reporter, c->count, c->sum);
	return 0;
}

static void phase_fanin(tr_system *sys, tr_ref reporter)
{
	const uint64_t total = (uint64_t)FANIN_PRODUCERS * FANIN_PER_PRODUCER;
	const uint64_t per = FANIN_PER_PRODUCER;
	struct counter *c = xcalloc(1, sizeof *c);
	tr_ref counter, producers[FANIN_PRODUCERS];
	double t0;
	unsigned i;
	int err;

	t0 = phase_begin(reporter, "fan-in", "msgs", total);
	*c = (struct counter){ .reporter = reporter, .total = total };
	counter = spawn(sys, counter_recv, c);
	for (i = 0; i < FANIN_PRODUCERS; i++) {
		struct producer *p = xcalloc(1, sizeof *p);

		*p = (struct producer){ .counter = counter, .count = per };
		producers[i] = spawn(sys, producer_recv, p);
	}
	for (i = 0; i < FANIN_PRODUCERS; i++)
		if ((err = tr_send(producers[i], MSG_START, NULL, 0)))
			die("tr_send", err);
	/* every producer sends 0 + 1 + ... + (per - 1) */
	phase_end("fan-in", "msgs", total, t0, FANIN_PRODUCERS * (per * (per - 1) / 2));
	/* the producers stopped themselves after their last chunk */
	stop(counter);
}

/* -- main ------------------------------------------------------------------ */

static void print_stats(const tr_system *sys)
{
	tr_stats s;
	tr_worker_stats w;
	unsigned i;

	tr_system_stats(sys, &s);
	printf("system counters\n"
	       "  sent %" PRIu64 ", delivered %" PRIu64 ", undelivered %" PRIu64
	       ", dead letters %" PRIu64 ", rejected (full) %" PRIu64 "\n"
	       "  actors spawned %" PRIu64 ", stopped %" PRIu64 ", alive %" PRIu64 "\n",
	       s.sent, s.delivered, s.undelivered, s.dead_letters, s.rejected_full,
	       s.spawned, s.stopped, s.alive);
	for (i = 0; i < tr_system_workers(sys); i++) {
		tr_system_worker_stats(sys, i, &w);
		printf("  worker %u: runs %" PRIu64 ", steals %" PRIu64 ", parks %" PRIu64
		       ", wakeups %" PRIu64 "\n",
		       i, w.runs, w.steals, w.parks, w.wakeups);
	}
}

int main(void)
{
	tr_system *sys;
	tr_ref reporter;
	int err;

	/* NULL config: the defaults, one worker per CPU */
	if ((err = tr_system_new(NULL, &sys)))
		die("tr_system_new", err);
	if ((err = tr_system_start(sys)))
		die("tr_system_start", err);
	printf("troupe %d.%d.%d, %u workers\n\n", TROUPE_VERSION_MAJOR,
	       TROUPE_VERSION_MINOR, TROUPE_VERSION_PATCH, tr_system_workers(sys));

	reporter = spawn(sys, reporter_recv, xcalloc(1, sizeof(struct reporter)));
	phase_pingpong(sys, reporter);
	phase_ring(sys, reporter);
	phase_fanin(sys, reporter);

	/* graceful: the reporter stops too, its cleanup hook gets TR_ESHUTDOWN */
	if ((err = tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL)))
		die("tr_system_shutdown", err);
	print_stats(sys);
	tr_system_destroy(&sys);
	return 0;
}
