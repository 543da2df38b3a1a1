/*
 * troupe_bench: the peer workloads (../shared/peers/README.md) on troupe.
 *
 * Usage: troupe_bench WORKLOAD [N [X]]
 * Prints one line on stdout, the peers' format:
 *   peer=troupe bench=NAME n=N seconds=S rate=R
 * `ask` appends p50_us=.. p99_us=.. as the peers do; `ask_open` appends
 * p50_us, p99_us, p999_us and max_us.
 * Exit status: 0 ok, 1 wrong final count (or a runtime call failed),
 * 2 usage error, 3 timed out waiting for the result.
 *
 * pingpong, ring and ask do what caf_bench.cpp and peers_bench.erl do, with
 * the same sizes, the same timed span and the same checks. The peers have
 * no counterpart of the others:
 *   ask_open N X  N requests sent open loop at X per second (default
 *                 200,000 and 200,000); latencies from each request's
 *                 scheduled send time; rate is the one achieved
 *   timers N      arm N one-shot timers (default 1,000,000) and cancel all
 *                 but one in 1,000; n counts arms + cancels; a cancelled
 *                 timer that fires fails the run
 * Messages carry one uint64_t. Latencies go to a log-bucketed histogram
 * (histogram.h, within 1% of the exact percentile). The main thread is not
 * an actor: actors hand it their result through a latch (struct result)
 * and it sleeps on a condition variable meanwhile, as CAF's scoped_actor
 * and Erlang's receive do.
 *
 * Adding a workload: one bench_<name>() function and one row in benches[].
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <troupe.h>

#include "histogram.h"

/* Upper bound for waiting on a result, as the peers (they are killed at 60 s). */
#define WAIT_LIMIT_S 55

enum exit_code {
	EXIT_OK = 0,
	EXIT_WRONG = 1,
	EXIT_USAGE = 2,
	EXIT_TIMEOUT = 3,
};

/* User message types. */
enum msg_type {
	MSG_INT = 1,  /* payload: one uint64_t */
	MSG_TICK,     /* no payload: a periodic timer's tick (ask_open) */
	MSG_MORE,     /* no payload: an actor's note to itself to go on */
	MSG_FIRE,     /* uint64_t: the index of the timer that fired (timers) */
	MSG_SENTINEL, /* no payload: the last timer of the timers workload */
};

static const char *bench_name = "-";

/*
 * Failures end the process at once, as in the peers: actors may still be
 * running, and a graceful shutdown would wait for them.
 */
static void die(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "troupe_bench %s: ", bench_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stdout);
	_Exit(code);
}

/* For runtime calls made by the main thread, which must not fail. */
static void must(int err, const char *what)
{
	if (err)
		die(EXIT_WRONG, "%s: %s (%s)", what, tr_strerror(err), tr_err_name(err));
}

static void check(const char *what, uint64_t got, uint64_t want)
{
	if (got != want)
		die(EXIT_WRONG, "%s: got %" PRIu64 ", want %" PRIu64, what, got, want);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Latencies are taken on the same clock, in integer nanoseconds. */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* `extra`: what a workload appends to the line (the ask latencies), or "". */
static void report(uint64_t n, double secs, const char *extra)
{
	printf("peer=troupe bench=%s n=%" PRIu64 " seconds=%.3f rate=%" PRIu64 "%s\n",
	       bench_name, n, secs, (uint64_t)((double)n / secs + 0.5), extra);
	fflush(stdout);
}

/*
 * The result latch: `reports` actors each post (a, b) once; the main thread
 * sleeps until all have. The last post's values are kept. An actor that
 * detects an error posts a failure instead, which ends the wait at once.
 */
struct result {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t pending;
	uint64_t a, b;
	const char *err_what; /* first failure, NULL if none */
	int err;
};

static void result_init(struct result *r, uint64_t reports)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	/* deadlines on the monotonic clock, immune to clock changes */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, &ca);
	pthread_condattr_destroy(&ca);
	r->pending = reports;
	r->a = r->b = 0;
	r->err_what = NULL;
	r->err = 0;
}

static void result_destroy(struct result *r)
{
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
}

static void result_post(struct result *r, uint64_t a, uint64_t b)
{
	pthread_mutex_lock(&r->mu);
	r->a = a;
	r->b = b;
	if (r->pending > 0 && --r->pending == 0)
		pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/*
 * Called by a behaviour that hit an error; returns the value the behaviour
 * returns, which makes its actor fail. `err` is a TR_E* code or 0.
 */
static int result_fail(struct result *r, const char *what, int err)
{
	pthread_mutex_lock(&r->mu);
	if (!r->err_what) {
		r->err_what = what;
		r->err = err;
	}
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return err ? err : TR_EFAILED;
}

/* Sleeps until every report arrived; exits 3 after WAIT_LIMIT_S, 1 on failure. */
static void result_wait(struct result *r, uint64_t *a, uint64_t *b)
{
	struct timespec deadline;
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += WAIT_LIMIT_S;
	pthread_mutex_lock(&r->mu);
	while (r->pending > 0 && !r->err_what && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&r->cv, &r->mu, &deadline);
	if (r->err_what)
		die(EXIT_WRONG, "%s%s%s", r->err_what, r->err ? ": " : "",
		    r->err ? tr_strerror(r->err) : "");
	if (r->pending > 0)
		die(EXIT_TIMEOUT, "timed out waiting for the result");
	*a = r->a;
	*b = r->b;
	pthread_mutex_unlock(&r->mu);
}

/* What a workload gets: the running system, its latch and an allocator. */
struct bench_ctx {
	tr_system *sys;
	struct result res;
	void *owned[8]; /* freed after the system is destroyed */
};

/*
 * Actor state must outlive the actors, which live until the system is shut
 * down after the workload returns; so the context owns it.
 */
static void *bench_calloc(struct bench_ctx *c, size_t n, size_t size)
{
	size_t i;
	void *p;

	for (i = 0; i < sizeof c->owned / sizeof c->owned[0]; i++) {
		if (c->owned[i])
			continue;
		p = calloc(n, size);
		if (!p)
			die(EXIT_WRONG, "out of memory");
		c->owned[i] = p;
		return p;
	}
	die(EXIT_WRONG, "bench_calloc: raise owned[]");
	return NULL;
}

static tr_ref spawn(struct bench_ctx *c, tr_behaviour fn, void *state)
{
	tr_ref ref;

	must(tr_spawn(c->sys, fn, state, &ref), "tr_spawn");
	return ref;
}

/* The integer of a MSG_INT message; false if the message is something else. */
static bool msg_u64(const tr_msg *m, uint64_t *x)
{
	if (tr_msg_type(m) != MSG_INT || tr_msg_size(m) != sizeof *x)
		return false;
	memcpy(x, tr_msg_data(m), sizeof *x);
	return true;
}

/* Sends from a behaviour; a failed send fails the workload rather than hang it. */
static int send_u64(struct result *r, tr_ref to, uint64_t x)
{
	int err = tr_send(to, MSG_INT, &x, sizeof x);

	return err ? result_fail(r, "tr_send", err) : 0;
}

/* -- pingpong ------------------------------------------------------------- */

/* Answers every integer with the same integer (state: the latch). */
static int pong_recv(void *state, tr_msg *m)
{
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(state, "pong: unexpected message", 0);
	return send_u64(state, tr_msg_sender(m), x);
}

struct pinger {
	tr_ref pong;
	uint64_t rounds;
	uint64_t received;
	struct result *res;
};

/*
 * Sends ping 1 as the actor starts, as the peers' pinger does. The init hook
 * runs inside tr_spawn; the runtime holds the reply until init has returned.
 */
static int ping_init(void *state)
{
	struct pinger *p = state;

	return send_u64(p->res, p->pong, 1);
}

/* Expects pong x == pongs received so far and sends x + 1. */
static int ping_recv(void *state, tr_msg *m)
{
	struct pinger *p = state;
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(p->res, "ping: unexpected message", 0);
	if (x != ++p->received)
		return result_fail(p->res, "reply out of order", 0);
	if (x == p->rounds) {
		/* each round trip is two messages: ping and pong */
		result_post(p->res, 2 * x, x);
		return tr_stop_self(TR_OK);
	}
	return send_u64(p->res, p->pong, x + 1);
}

static int bench_pingpong(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	struct pinger *p = bench_calloc(c, 1, sizeof *p);
	tr_actor_opts ping_opts = { .behaviour = ping_recv, .state = p, .init = ping_init };
	uint64_t rounds = n / 2 ? n / 2 : 1;
	uint64_t msgs, last;
	tr_ref ping;
	double t0, secs;

	(void)x;
	p->rounds = rounds;
	p->res = &c->res;
	t0 = now();
	p->pong = spawn(c, pong_recv, &c->res);
	must(tr_spawn_opts(c->sys, &ping_opts, &ping), "tr_spawn ping");
	result_wait(&c->res, &msgs, &last);
	secs = now() - t0;
	check("messages", msgs, 2 * rounds);
	check("last value", last, rounds);
	report(msgs, secs, "");
	return EXIT_OK;
}

/* -- ring ----------------------------------------------------------------- */

struct ring_node {
	tr_ref next;
	uint64_t index;
	uint64_t hops;
	struct result *res;
};

/*
 * The token is the number of hops made so far; the node that receives
 * token == hops reports its own index.
 */
static int ring_recv(void *state, tr_msg *m)
{
	struct ring_node *node = state;
	uint64_t token;

	if (!msg_u64(m, &token))
		return result_fail(node->res, "ring: unexpected message", 0);
	if (token == node->hops) {
		result_post(node->res, token, node->index);
		return 0;
	}
	return send_u64(node->res, node->next, token + 1);
}

static int bench_ring(struct bench_ctx *c, uint64_t hops, uint64_t size)
{
	struct ring_node *nodes = bench_calloc(c, size, sizeof *nodes);
	uint64_t token, index, i;
	tr_ref first = TR_REF_NONE;
	double t0, secs;

	for (i = 0; i < size; i++) {
		tr_ref ref;

		nodes[i].index = i;
		nodes[i].hops = hops;
		nodes[i].res = &c->res;
		ref = spawn(c, ring_recv, &nodes[i]);
		/*
		 * No node has a message yet, so none runs: linking them by
		 * writing their state here is safe, and the token's sends make
		 * the writes visible to each node before its first run.
		 */
		nodes[(i + size - 1) % size].next = ref;
		if (i == 0)
			first = ref;
	}
	t0 = now();
	must(tr_send(first, MSG_INT, &(uint64_t){0}, sizeof(uint64_t)), "tr_send token");
	result_wait(&c->res, &token, &index);
	secs = now() - t0;
	check("hops", token, hops);
	check("final node", index, hops % size);
	report(hops, secs, "");
	return EXIT_OK;
}

/* -- ask ------------------------------------------------------------------ */

/*
 * Timeout of every request in the ask workloads: far above any round trip,
 * yet below WAIT_LIMIT_S, so a lost reply fails the run as TR_ETIMEDOUT
 * (naming the cause) instead of as a hang. The peers ask without a timeout
 * (CAF: `infinite`); in troupe every request has one.
 */
#define ASK_TIMEOUT_NS (10ull * 1000000000u)

/* Answers a request x with x + 1 (state: the latch). */
static int server_recv(void *state, tr_msg *m)
{
	uint64_t x;
	int err;

	if (!tr_msg_is_request(m) || !msg_u64(m, &x))
		return result_fail(state, "server: unexpected message", 0);
	x++;
	err = tr_reply(m, MSG_INT, &x, sizeof x);
	return err ? result_fail(state, "tr_reply", err) : 0;
}

struct asker {
	struct result *res;
	tr_ref server;
	uint64_t rounds;
	uint64_t done;    /* replies received; also the next request's value */
	uint64_t sent_ns; /* when the request in flight was sent */
	struct hist lat;
};

static int ask_reply(void *state, void *ctx, int status, tr_msg *reply);

static int ask_next(struct asker *a)
{
	int err;

	a->sent_ns = now_ns();
	err = tr_ask(a->server, MSG_INT, &a->done, sizeof a->done, ASK_TIMEOUT_NS, ask_reply, NULL);
	return err ? result_fail(a->res, "tr_ask", err) : 0;
}

/* Runs in the client: checks the answer, times it and asks the next one. */
static int ask_reply(void *state, void *ctx, int status, tr_msg *reply)
{
	struct asker *a = state;
	uint64_t t = now_ns();
	uint64_t y;

	(void)ctx;
	if (status)
		return result_fail(a->res, "ask: request failed", status);
	hist_record(&a->lat, t - a->sent_ns);
	if (!msg_u64(reply, &y) || y != a->done + 1)
		return result_fail(a->res, "ask: wrong answer", 0);
	if (++a->done == a->rounds) {
		result_post(a->res, a->done, y);
		return tr_stop_self(TR_OK);
	}
	return ask_next(a);
}

/* The client gets its replies through continuations, nothing else. */
static int asker_recv(void *state, tr_msg *m)
{
	struct asker *a = state;

	(void)m;
	return result_fail(a->res, "client: unexpected message", 0);
}

/* The first request leaves as the client starts, as in the peers. */
static int asker_init(void *state)
{
	return ask_next(state);
}

/* Prints a histogram's percentile in microseconds, 2 decimals like the peers. */
static double pct_us(const struct hist *h, double p)
{
	return (double)hist_percentile(h, p) / 1e3;
}

static int bench_ask(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	struct asker *a = bench_calloc(c, 1, sizeof *a);
	tr_actor_opts opts = { .behaviour = asker_recv, .state = a, .init = asker_init };
	uint64_t done, last;
	char extra[64];
	tr_ref client;
	double t0, secs;

	(void)x;
	a->res = &c->res;
	a->rounds = n;
	hist_init(&a->lat);
	t0 = now();
	a->server = spawn(c, server_recv, &c->res);
	must(tr_spawn_opts(c->sys, &opts, &client), "tr_spawn client");
	result_wait(&c->res, &done, &last);
	secs = now() - t0;
	/* the latch's mutex orders the client's last write before these reads */
	check("round trips", done, n);
	check("last answer", last, n);
	check("latency samples", a->lat.count, n);
	snprintf(extra, sizeof extra, " p50_us=%.2f p99_us=%.2f", pct_us(&a->lat, 0.50),
		 pct_us(&a->lat, 0.99));
	report(n, secs, extra);
	return EXIT_OK;
}

/* -- ask_open ------------------------------------------------------------- */

/*
 * Open loop: requests leave on a schedule, X per second, whether or not the
 * earlier ones were answered, and each latency is taken from the request's
 * scheduled send time, not from when it actually left. A client that falls
 * behind (a late tick, a slow server) thus sees the delay in every request
 * it held back, instead of quietly sending fewer (coordinated omission).
 *
 * The schedule is a grid of OPEN_TICK_NS: request i belongs at i / X s,
 * rounded up to the next tick, so every tick releases a burst of about
 * X * OPEN_TICK_NS requests (20 at the default rate). Rounding up to the
 * grid the timer can actually serve keeps the timer's granularity out of
 * the latencies, while its lateness stays in: a tick that comes late delays
 * its whole burst, and that counts. Replies also release whatever has come
 * due, so one late tick does not hold back a burst whose time has come.
 */
#define OPEN_TICK_NS 100000u /* 100 us */

struct open_client {
	struct result *res;
	tr_ref server;
	uint64_t n;          /* requests in all */
	uint64_t rate;       /* requests per second */
	uint64_t t0;         /* origin of the schedule, ns */
	uint64_t issued;     /* requests sent; the next one's index */
	uint64_t answered;
	tr_timer tick;
	struct hist lat;
};

/* Offset from t0 at which request i is due (see above). Split in whole
 * seconds and the rest so that i * 10^9 cannot overflow. */
static uint64_t open_due(const struct open_client *o, uint64_t i)
{
	uint64_t at = i / o->rate * 1000000000u + i % o->rate * 1000000000u / o->rate;

	return (at + OPEN_TICK_NS - 1) / OPEN_TICK_NS * OPEN_TICK_NS;
}

static int open_reply(void *state, void *ctx, int status, tr_msg *reply);

/* Sends every request that is due at time `t`; stops the ticks after the last. */
static int open_pump(struct open_client *o, uint64_t t)
{
	int err;

	while (o->issued < o->n && o->t0 + open_due(o, o->issued) <= t) {
		uint64_t i = o->issued;

		/* the context carries the index: its schedule is recomputed from it */
		err = tr_ask(o->server, MSG_INT, &i, sizeof i, ASK_TIMEOUT_NS, open_reply,
			     (void *)(uintptr_t)i);
		if (err)
			return result_fail(o->res, "tr_ask", err);
		o->issued++;
	}
	if (o->issued == o->n && o->tick.id) {
		err = tr_timer_cancel(o->tick);
		if (err)
			return result_fail(o->res, "tr_timer_cancel", err);
		o->tick = TR_TIMER_NONE;
	}
	return 0;
}

static int open_reply(void *state, void *ctx, int status, tr_msg *reply)
{
	struct open_client *o = state;
	uint64_t t = now_ns();
	uint64_t i = (uintptr_t)ctx;
	uint64_t y;

	if (status)
		return result_fail(o->res, "ask_open: request failed", status);
	if (!msg_u64(reply, &y) || y != i + 1)
		return result_fail(o->res, "ask_open: wrong answer", 0);
	hist_record(&o->lat, t - (o->t0 + open_due(o, i)));
	if (++o->answered == o->n) {
		result_post(o->res, o->answered, o->issued);
		return tr_stop_self(TR_OK);
	}
	return open_pump(o, t);
}

static int open_recv(void *state, tr_msg *m)
{
	struct open_client *o = state;

	if (tr_msg_type(m) != MSG_TICK)
		return result_fail(o->res, "client: unexpected message", 0);
	return open_pump(o, now_ns());
}

/*
 * Starts the schedule: request 0 is due at once, the rest on the ticks.
 * t0 is read before the timer is armed, so no tick can come before its
 * point of the grid; the time the arming takes is then a head start the
 * timer has on the schedule, counted in every latency. The system's first
 * timer pays for setting up the timer table (tens of us); a throwaway
 * timer armed first keeps that one-time cost out of the offset.
 */
static int open_init(void *state)
{
	struct open_client *o = state;
	tr_timer warm;
	int err;

	err = tr_send_after(tr_self(), ASK_TIMEOUT_NS, MSG_TICK, NULL, 0, &warm);
	if (!err)
		err = tr_timer_cancel(warm);
	if (err)
		return result_fail(o->res, "warming up the timer", err);
	o->t0 = now_ns();
	err = tr_send_every(tr_self(), OPEN_TICK_NS, MSG_TICK, NULL, 0, &o->tick);
	if (err)
		return result_fail(o->res, "tr_send_every", err);
	return open_pump(o, o->t0);
}

static int bench_ask_open(struct bench_ctx *c, uint64_t n, uint64_t rate)
{
	struct open_client *o = bench_calloc(c, 1, sizeof *o);
	tr_actor_opts opts = { .behaviour = open_recv, .state = o, .init = open_init };
	uint64_t answered, issued;
	char extra[128];
	tr_ref client;
	double t0, secs;

	if (rate > UINT64_MAX / 1000000000u)
		die(EXIT_USAGE, "rate too high");
	o->res = &c->res;
	o->n = n;
	o->rate = rate;
	hist_init(&o->lat);
	t0 = now();
	o->server = spawn(c, server_recv, &c->res);
	must(tr_spawn_opts(c->sys, &opts, &client), "tr_spawn client");
	result_wait(&c->res, &answered, &issued);
	secs = now() - t0;
	check("requests", issued, n);
	check("replies", answered, n);
	check("latency samples", o->lat.count, n);
	snprintf(extra, sizeof extra, " p50_us=%.2f p99_us=%.2f p999_us=%.2f max_us=%.2f",
		 pct_us(&o->lat, 0.50), pct_us(&o->lat, 0.99), pct_us(&o->lat, 0.999),
		 (double)o->lat.max / 1e3);
	/* the rate is the one achieved: below X means the runtime fell behind */
	report(n, secs, extra);
	return EXIT_OK;
}

/* -- timers --------------------------------------------------------------- */

/*
 * One actor arms N one-shot timers to itself, with delays spread over
 * 1..100 ms, and cancels each after TIMER_LAG more were armed: the heap
 * then holds a few live timers among many cancelled ones, as a server's
 * request timeouts do (almost all are cancelled by the reply). One in
 * TIMER_KEEP is never cancelled and must fire; no cancelled one may.
 *
 * Every cancel happens in the same behaviour call as its arm, so the
 * timer's message, even if it fired meanwhile, cannot have been handled:
 * tr_timer_cancel must return TR_OK every time.
 */
#define TIMER_MIN_NS 1000000u   /* 1 ms */
#define TIMER_SPAN_NS 99000000u /* delays in [1 ms, 100 ms] */
#define TIMER_LAG 8u
#define TIMER_KEEP 1000u
/* timers armed per behaviour call, as the peers' senders chunk their sends */
#define TIMER_CHUNK 1000u

struct timer_actor {
	struct result *res;
	uint64_t n;
	uint64_t armed, cancelled, kept;
	uint64_t fired_kept, fired_cancelled;
	uint64_t rng;
	double t_end; /* when the last timer was armed and cancelled */
};

/* xorshift64: a fixed, reproducible spread of delays. */
static uint64_t timer_rand(struct timer_actor *ta)
{
	uint64_t x = ta->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return ta->rng = x;
}

static bool timer_is_kept(uint64_t i)
{
	return i % TIMER_KEEP == TIMER_KEEP - 1;
}

static int timer_cancel(struct timer_actor *ta, tr_timer t)
{
	int err = tr_timer_cancel(t);

	if (err)
		return result_fail(ta->res, "tr_timer_cancel", err);
	ta->cancelled++;
	return 0;
}

/* Arms (and cancels) the next TIMER_CHUNK timers. */
static int timer_chunk(struct timer_actor *ta)
{
	uint64_t end = ta->armed + TIMER_CHUNK < ta->n ? ta->armed + TIMER_CHUNK : ta->n;
	tr_timer pend[TIMER_LAG]; /* armed in this call, to be cancelled: a FIFO */
	unsigned head = 0, np = 0;
	int err;

	for (; ta->armed < end; ta->armed++) {
		uint64_t i = ta->armed;
		uint64_t delay = TIMER_MIN_NS + timer_rand(ta) % (TIMER_SPAN_NS + 1);
		tr_timer t;

		if (np == TIMER_LAG) {
			if ((err = timer_cancel(ta, pend[head])))
				return err;
			head = (head + 1) % TIMER_LAG;
			np--;
		}
		err = tr_send_after(tr_self(), delay, MSG_FIRE, &i, sizeof i, &t);
		if (err)
			return result_fail(ta->res, "tr_send_after", err);
		if (timer_is_kept(i)) {
			ta->kept++;
			continue;
		}
		pend[(head + np++) % TIMER_LAG] = t;
	}
	for (; np > 0; np--, head = (head + 1) % TIMER_LAG)
		if ((err = timer_cancel(ta, pend[head])))
			return err;
	return 0;
}

static int timer_recv(void *state, tr_msg *m)
{
	struct timer_actor *ta = state;
	uint64_t i;
	int err;

	switch (tr_msg_type(m)) {
	case MSG_MORE:
		if ((err = timer_chunk(ta)))
			return err;
		if (ta->armed < ta->n) {
			err = tr_send(tr_self(), MSG_MORE, NULL, 0);
			return err ? result_fail(ta->res, "tr_send", err) : 0;
		}
		ta->t_end = now();
		/*
		 * Every timer is due by now + 100 ms. The service fires in
		 * deadline order, so when one due 20 ms after them all arrives,
		 * every other timer has fired or will never fire.
		 */
		err = tr_send_after(tr_self(), TIMER_MIN_NS + TIMER_SPAN_NS + 20000000u,
				    MSG_SENTINEL, NULL, 0, NULL);
		return err ? result_fail(ta->res, "tr_send_after sentinel", err) : 0;
	case MSG_FIRE:
		if (tr_msg_size(m) != sizeof i)
			break;
		memcpy(&i, tr_msg_data(m), sizeof i);
		if (i >= ta->armed)
			break;
		if (timer_is_kept(i))
			ta->fired_kept++;
		else
			ta->fired_cancelled++;
		return 0;
	case MSG_SENTINEL:
		if (ta->fired_kept != ta->kept)
			return result_fail(ta->res, "timers not cancelled: wrong number fired", 0);
		result_post(ta->res, ta->armed + ta->cancelled, ta->fired_cancelled);
		return tr_stop_self(TR_OK);
	}
	return result_fail(ta->res, "timers: unexpected message", 0);
}

static int bench_timers(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	struct timer_actor *ta = bench_calloc(c, 1, sizeof *ta);
	uint64_t ops, fired_cancelled;
	tr_ref ref;
	double t0;

	(void)x;
	ta->res = &c->res;
	ta->n = n;
	ta->rng = 0x9e3779b97f4a7c15u;
	t0 = now();
	ref = spawn(c, timer_recv, ta);
	must(tr_send(ref, MSG_MORE, NULL, 0), "tr_send start");
	result_wait(&c->res, &ops, &fired_cancelled);
	check("timers armed", ta->armed, n);
	check("timers cancelled", ta->cancelled, n - ta->kept);
	check("arms + cancels", ops, 2 * n - ta->kept);
	check("cancelled timers that fired", fired_cancelled, 0);
	/* timed: the arming and cancelling, not the wait for the last to fire */
	report(ops, ta->t_end - t0, "");
	return EXIT_OK;
}

/* -- main ----------------------------------------------------------------- */

/* -- sources and sinks (fanin, pipeline, broadcast) --------------------- */

/* Actors that emit many messages send CHUNK per handler call, then "more"
 * to themselves, as the peers do, so no handler holds a worker for long. */
#define CHUNK 1000

static uint64_t tri(uint64_t n) { return n * (n - 1) / 2; } /* 0 + 1 + ... + n-1 */

/* Counts and sums n integers, then reports (count, sum) once. */
struct sink {
	uint64_t n, count, sum;
	struct result *res;
};

static int sink_recv(void *state, tr_msg *m)
{
	struct sink *s = state;
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(s->res, "sink: unexpected message", 0);
	s->sum += x;
	if (++s->count == s->n) {
		result_post(s->res, s->count, s->sum);
		return tr_stop_self(TR_OK);
	}
	return 0;
}

/* Sends 0 .. count-1 to target, CHUNK at a time. */
struct source {
	tr_ref target;
	uint64_t count, sent;
	struct result *res;
};

static int source_init(void *state)
{
	(void)state;
	return tr_send(tr_self(), MSG_MORE, NULL, 0);
}

static int source_recv(void *state, tr_msg *m)
{
	struct source *s = state;
	uint64_t end = s->sent + CHUNK < s->count ? s->sent + CHUNK : s->count;

	if (tr_msg_type(m) != MSG_MORE)
		return result_fail(s->res, "source: unexpected message", 0);
	for (; s->sent < end; s->sent++) {
		int rc = send_u64(s->res, s->target, s->sent);
		if (rc)
			return rc;
	}
	if (s->sent < s->count)
		return tr_send(tr_self(), MSG_MORE, NULL, 0);
	return tr_stop_self(TR_OK);
}

static void spawn_source(struct bench_ctx *c, struct source *s, tr_ref target, uint64_t count)
{
	tr_actor_opts o = { .behaviour = source_recv, .state = s, .init = source_init };
	tr_ref r;

	s->target = target;
	s->count = count;
	s->res = &c->res;
	must(tr_spawn_opts(c->sys, &o, &r), "tr_spawn source");
}

static tr_ref spawn_sink(struct bench_ctx *c, struct sink *s, uint64_t n)
{
	s->n = n;
	s->res = &c->res;
	return spawn(c, sink_recv, s);
}

/* -- fanin ---------------------------------------------------------------- */

static int bench_fanin(struct bench_ctx *c, uint64_t n, uint64_t producers)
{
	struct sink *sk = bench_calloc(c, 1, sizeof *sk);
	struct source *src = bench_calloc(c, producers, sizeof *src);
	uint64_t want_sum = 0, count, sum;
	double t0, secs;
	tr_ref counter;

	t0 = now();
	counter = spawn_sink(c, sk, n);
	for (uint64_t p = 0; p < producers; p++) {
		uint64_t share = n / producers + (p < n % producers ? 1 : 0);
		want_sum += tri(share);
		spawn_source(c, &src[p], counter, share);
	}
	result_wait(&c->res, &count, &sum);
	secs = now() - t0;
	check("count", count, n);
	check("sum", sum, want_sum);
	report(n, secs, "");
	return EXIT_OK;
}

/* -- spawn ---------------------------------------------------------------- */

/* Answers its one integer to the driver and stops. */
static int child_recv(void *state, tr_msg *m)
{
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(state, "child: unexpected message", 0);
	send_u64(state, tr_msg_sender(m), x);
	return tr_stop_self(TR_OK);
}

struct driver {
	uint64_t n, wave, spawned, replies, sum;
	struct result *res;
};

/* Forks the next wave: spawns up to `wave` children and sends each its index. */
static int fork_wave(struct driver *d)
{
	uint64_t end = d->spawned + d->wave < d->n ? d->spawned + d->wave : d->n;

	for (; d->spawned < end; d->spawned++) {
		tr_ref kid;
		int rc = tr_spawn(tr_self_system(), child_recv, d->res, &kid);
		if (rc)
			return result_fail(d->res, "tr_spawn child", rc);
		if ((rc = send_u64(d->res, kid, d->spawned)))
			return rc;
	}
	return 0;
}

static int driver_init(void *state) { return fork_wave(state); }

static int driver_recv(void *state, tr_msg *m)
{
	struct driver *d = state;
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(d->res, "driver: unexpected message", 0);
	d->sum += x;
	if (++d->replies == d->n) {
		result_post(d->res, d->replies, d->sum);
		return tr_stop_self(TR_OK);
	}
	return d->replies == d->spawned ? fork_wave(d) : 0;
}

static int bench_spawn(struct bench_ctx *c, uint64_t n, uint64_t wave)
{
	struct driver *d = bench_calloc(c, 1, sizeof *d);
	tr_actor_opts o = { .behaviour = driver_recv, .state = d, .init = driver_init };
	uint64_t replies, sum;
	double t0, secs;
	tr_ref r;

	d->n = n;
	d->wave = wave;
	d->res = &c->res;
	t0 = now();
	must(tr_spawn_opts(c->sys, &o, &r), "tr_spawn driver");
	result_wait(&c->res, &replies, &sum);
	secs = now() - t0;
	check("replies", replies, n);
	check("sum", sum, tri(n));
	report(n, secs, "");
	return EXIT_OK;
}

/* -- broadcast ------------------------------------------------------------ */

/* Publishes 0 .. m-1 on a channel, CHUNK at a time. */
struct publisher {
	tr_channel *ch;
	uint64_t m, sent;
	struct result *res;
};

static int publisher_recv(void *state, tr_msg *msg)
{
	struct publisher *p = state;
	uint64_t end = p->sent + CHUNK < p->m ? p->sent + CHUNK : p->m;

	if (tr_msg_type(msg) != MSG_MORE)
		return result_fail(p->res, "publisher: unexpected message", 0);
	for (; p->sent < end; p->sent++) {
		tr_pub_result r;
		int rc = tr_publish(p->ch, MSG_INT, &p->sent, sizeof p->sent, &r);
		if (rc || r.dropped || r.gone)
			return result_fail(p->res, "tr_publish", rc);
	}
	if (p->sent < p->m)
		return tr_send(tr_self(), MSG_MORE, NULL, 0);
	return tr_stop_self(TR_OK);
}

/* Each of k subscribers is a sink that checks its own sum (the latch keeps
 * only the last report) and reports after m messages. */
struct checked_sink {
	struct sink s;
	uint64_t want_sum;
};

static int checked_sink_recv(void *state, tr_msg *m)
{
	struct checked_sink *cs = state;

	if (cs->s.count + 1 == cs->s.n) {
		uint64_t x;
		if (msg_u64(m, &x) && cs->s.sum + x != cs->want_sum)
			return result_fail(cs->s.res, "broadcast: wrong sum at a subscriber", 0);
	}
	return sink_recv(&cs->s, m);
}

static int bench_broadcast(struct bench_ctx *c, uint64_t m, uint64_t k)
{
	struct checked_sink *subs = bench_calloc(c, k, sizeof *subs);
	struct publisher *p = bench_calloc(c, 1, sizeof *p);
	tr_actor_opts o = { .behaviour = publisher_recv, .state = p, .init = source_init };
	uint64_t count, sum;
	double t0, secs;
	tr_ref r;

	must(tr_channel_open(c->sys, "bench.broadcast", &p->ch), "tr_channel_open");
	for (uint64_t i = 0; i < k; i++) {
		subs[i].s.n = m;
		subs[i].s.res = &c->res;
		subs[i].want_sum = tri(m);
		must(tr_subscribe(p->ch, spawn(c, checked_sink_recv, &subs[i]), TR_SUB_DROP),
		     "tr_subscribe");
	}
	p->m = m;
	p->res = &c->res;
	t0 = now();
	must(tr_spawn_opts(c->sys, &o, &r), "tr_spawn publisher");
	result_wait(&c->res, &count, &sum);
	secs = now() - t0;
	check("count of the last subscriber", count, m);
	check("sum of the last subscriber", sum, tri(m));
	report(k * m, secs, "");
	return EXIT_OK;
}

/* -- pipeline ------------------------------------------------------------- */

struct stage {
	tr_ref next;
	struct result *res;
};

static int stage_recv(void *state, tr_msg *m)
{
	struct stage *st = state;
	uint64_t x;

	if (!msg_u64(m, &x))
		return result_fail(st->res, "stage: unexpected message", 0);
	return send_u64(st->res, st->next, x + 1);
}

static int bench_pipeline(struct bench_ctx *c, uint64_t n, uint64_t stages)
{
	struct sink *sk = bench_calloc(c, 1, sizeof *sk);
	struct stage *st = bench_calloc(c, stages, sizeof *st);
	struct source *src = bench_calloc(c, 1, sizeof *src);
	uint64_t count, sum;
	double t0, secs;
	tr_ref head;

	t0 = now();
	head = spawn_sink(c, sk, n);
	for (uint64_t i = 1; i < stages; i++) {
		st[i].next = head;
		st[i].res = &c->res;
		head = spawn(c, stage_recv, &st[i]);
	}
	spawn_source(c, src, head, n);
	result_wait(&c->res, &count, &sum);
	secs = now() - t0;
	check("count", count, n);
	check("sum", sum, tri(n) + (stages - 1) * n);
	report(n, secs, "");
	return EXIT_OK;
}

/* -- registry: lookups per second from two threads ------------------------ */

#define NAMES 1000

struct lookup_thread {
	tr_system *sys;
	uint64_t n, found;
	pthread_barrier_t *start;
};

static void name_of(char *buf, size_t len, uint64_t i) { snprintf(buf, len, "svc.%" PRIu64, i); }

static void *lookup_loop(void *arg)
{
	struct lookup_thread *t = arg;
	char name[32];
	tr_ref r;

	pthread_barrier_wait(t->start);
	for (uint64_t i = 0; i < t->n; i++) {
		name_of(name, sizeof name, (i * 7919) % NAMES);
		if (tr_whereis(t->sys, name, &r) == TR_OK)
			t->found++;
	}
	return NULL;
}

static int idle_recv(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

static int bench_registry(struct bench_ctx *c, uint64_t n, uint64_t threads)
{
	struct lookup_thread *t = bench_calloc(c, threads, sizeof *t);
	pthread_t *tid = bench_calloc(c, threads, sizeof *tid);
	pthread_barrier_t start;
	uint64_t found = 0;
	char name[32];
	double t0, secs;

	for (uint64_t i = 0; i < NAMES; i++) {
		name_of(name, sizeof name, i);
		must(tr_register(c->sys, name, spawn(c, idle_recv, NULL)), "tr_register");
	}
	pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
	for (uint64_t i = 0; i < threads; i++) {
		t[i] = (struct lookup_thread){ c->sys, n / threads + (i < n % threads), 0, &start };
		if (pthread_create(&tid[i], NULL, lookup_loop, &t[i]))
			die(EXIT_WRONG, "pthread_create");
	}
	t0 = now();
	pthread_barrier_wait(&start);
	for (uint64_t i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		found += t[i].found;
	}
	secs = now() - t0;
	pthread_barrier_destroy(&start);
	check("lookups that found their name", found, n);
	report(n, secs, "");
	return EXIT_OK;
}

/* -- troupe's own figures ------------------------------------------------ */

/* pingpong with the two actors pinned: on different workers (cross) or on
 * the same one (local). Same checks and count as pingpong. */
static int pingpong_pinned(struct bench_ctx *c, uint64_t n, unsigned ping_w, unsigned pong_w)
{
	struct pinger *p = bench_calloc(c, 1, sizeof *p);
	tr_actor_opts pong_opts = { .behaviour = pong_recv, .state = &c->res, .worker = pong_w };
	tr_actor_opts ping_opts = { .behaviour = ping_recv, .state = p, .init = ping_init,
				    .worker = ping_w };
	uint64_t rounds = n / 2 ? n / 2 : 1, msgs, last;
	tr_ref ping;
	double t0, secs;

	p->rounds = rounds;
	p->res = &c->res;
	t0 = now();
	must(tr_spawn_opts(c->sys, &pong_opts, &p->pong), "tr_spawn pong");
	must(tr_spawn_opts(c->sys, &ping_opts, &ping), "tr_spawn ping");
	result_wait(&c->res, &msgs, &last);
	secs = now() - t0;
	check("messages", msgs, 2 * rounds);
	check("last value", last, rounds);
	report(msgs, secs, "");
	return EXIT_OK;
}

static int bench_pingpong_cross(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	(void)x;
	if (tr_system_workers(c->sys) < 2)
		die(EXIT_USAGE, "needs two workers");
	return pingpong_pinned(c, n, 1, 2);
}

static int bench_pingpong_local(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	(void)x;
	return pingpong_pinned(c, n, 1, 1);
}

static uint64_t rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
		die(EXIT_WRONG, "cannot read /proc/self/statm");
	fclose(f);
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Spawns n actors that never get a message; reports the resident-set
 * growth per actor (the rate field is the spawn rate). */
static int bench_idle_bytes(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	uint64_t before, after;
	char extra[64];
	double t0, secs;
	tr_stats st;

	(void)x;
	/* the system was just started: let its threads finish starting (their
	 * stacks, liburcu's registration) so that only the actors are counted */
	nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
	before = rss_bytes();
	t0 = now();
	for (uint64_t i = 0; i < n; i++)
		(void)spawn(c, idle_recv, NULL);
	secs = now() - t0;
	after = rss_bytes();
	must(tr_system_stats(c->sys, &st), "tr_system_stats");
	check("alive", st.alive, n);
	snprintf(extra, sizeof extra, " bytes_per_actor=%.1f",
		 (double)(after > before ? after - before : 0) / (double)n);
	report(n, secs, extra);
	return EXIT_OK;
}

static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time the whole process uses while a started system with some idle
 * actors and an armed timer does nothing for n milliseconds. */
static int bench_idle_cpu(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	struct timespec nap = { (time_t)(n / 1000), (long)(n % 1000) * 1000000L };
	tr_timer t;
	char extra[64];
	double c0, t0, secs, cpu;

	(void)x;
	for (int i = 0; i < 1000; i++)
		(void)spawn(c, idle_recv, NULL);
	/* an armed timer far away must not cost anything either */
	must(tr_send_after(spawn(c, idle_recv, NULL), 3600ull * 1000000000ull, MSG_INT, NULL, 0, &t),
	     "tr_send_after");
	nanosleep(&(struct timespec){ 0, 100000000 }, NULL); /* let workers park */
	c0 = cpu_seconds();
	t0 = now();
	nanosleep(&nap, NULL);
	secs = now() - t0;
	cpu = cpu_seconds() - c0;
	snprintf(extra, sizeof extra, " cpu_percent=%.3f", 100.0 * cpu / secs);
	report(n, secs, extra);
	return EXIT_OK;
}

/* Wake-up latency of a parked worker: main sends to an idle actor once
 * every worker has parked and times how long until the behaviour runs. */
struct waker {
	_Atomic uint64_t ran_at;
};

static int waker_recv(void *state, tr_msg *m)
{
	struct waker *w = state;

	(void)m;
	atomic_store(&w->ran_at, now_ns());
	return 0;
}

static int bench_wakeup(struct bench_ctx *c, uint64_t n, uint64_t x)
{
	struct waker *w = bench_calloc(c, 1, sizeof *w);
	struct hist *h = bench_calloc(c, 1, sizeof *h);
	tr_ref r = spawn(c, waker_recv, w);
	char extra[96];
	double t0, secs;

	(void)x;
	t0 = now();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t sent;

		/* 2 ms idle: far beyond the 50 us spin, so the workers sleep */
		nanosleep(&(struct timespec){ 0, 2000000 }, NULL);
		atomic_store(&w->ran_at, 0);
		sent = now_ns();
		must(tr_send(r, MSG_INT, NULL, 0), "tr_send");
		while (!atomic_load(&w->ran_at))
			sched_yield();
		hist_record(h, atomic_load(&w->ran_at) - sent);
	}
	secs = now() - t0;
	snprintf(extra, sizeof extra, " p50_us=%.2f p99_us=%.2f", pct_us(h, 0.50), pct_us(h, 0.99));
	report(n, secs, extra);
	return EXIT_OK;
}

struct bench {
	const char *name;
	uint64_t n; /* default N */
	uint64_t x; /* default X; 0: the workload takes no X */
	int (*run)(struct bench_ctx *c, uint64_t n, uint64_t x);
};

static const struct bench benches[] = {
	{ "pingpong", 1000000, 0, bench_pingpong },
	{ "ring", 5000000, 503, bench_ring },
	{ "ask", 500000, 0, bench_ask },
	{ "ask_open", 200000, 200000, bench_ask_open },
	{ "timers", 1000000, 0, bench_timers },
	{ "fanin", 5000000, 2, bench_fanin },
	{ "spawn", 500000, 1000, bench_spawn },
	{ "broadcast", 20000, 100, bench_broadcast },
	{ "pipeline", 2000000, 4, bench_pipeline },
	{ "registry", 10000000, 2, bench_registry },
	{ "pingpong_cross", 1000000, 0, bench_pingpong_cross },
	{ "pingpong_local", 1000000, 0, bench_pingpong_local },
	{ "idle_bytes", 200000, 0, bench_idle_bytes },
	{ "idle_cpu", 1000, 0, bench_idle_cpu },
	{ "wakeup", 1000, 0, bench_wakeup },
};

#define NBENCHES (sizeof benches / sizeof benches[0])

static void usage(void)
{
	size_t i;

	fprintf(stderr, "usage: troupe_bench");
	for (i = 0; i < NBENCHES; i++)
		fprintf(stderr, "%c%s", i ? '|' : ' ', benches[i].name);
	fprintf(stderr, " [N [X]]\n");
	exit(EXIT_USAGE);
}

static uint64_t parse_arg(const char *s)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0 || *s == '-') {
		fprintf(stderr, "troupe_bench: bad number '%s'\n", s);
		exit(EXIT_USAGE);
	}
	return v;
}

int main(int argc, char **argv)
{
	const struct bench *b = NULL;
	struct bench_ctx c = { 0 };
	uint64_t n, x;
	size_t i;
	int rc;

	for (i = 0; argc > 1 && i < NBENCHES; i++)
		if (!strcmp(argv[1], benches[i].name))
			b = &benches[i];
	if (!b || argc > (b->x ? 4 : 3))
		usage();
	bench_name = b->name;
	n = argc > 2 ? parse_arg(argv[2]) : b->n;
	x = argc > 3 ? parse_arg(argv[3]) : b->x;

	/* default config: one worker per CPU, as the peers' schedulers */
	must(tr_system_new(NULL, &c.sys), "tr_system_new");
	must(tr_system_start(c.sys), "tr_system_start");
	result_init(&c.res, 1);
	rc = b->run(&c, n, x);
	must(tr_system_shutdown(c.sys, TR_SHUTDOWN_GRACEFUL), "tr_system_shutdown");
	tr_system_destroy(&c.sys);
	result_destroy(&c.res);
	for (i = 0; i < sizeof c.owned / sizeof c.owned[0]; i++)
		free(c.owned[i]);
	return rc;
}
