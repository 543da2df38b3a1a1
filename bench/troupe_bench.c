/*
 * troupe_bench: the peer workloads (../shared/peers/README.md) on troupe.
 *
 * Usage: troupe_bench WORKLOAD [N [X]]
 * Prints one line on stdout, the peers' format:
 *   peer=troupe bench=NAME n=N seconds=S rate=R
 * Exit status: 0 ok, 1 wrong final count (or a runtime call failed),
 * 2 usage error, 3 timed out waiting for the result.
 *
 * Each workload does what caf_bench.cpp and peers_bench.erl do, with the same
 * sizes, the same timed span and the same checks. Messages carry one
 * uint64_t. The main thread is not an actor: actors hand it their result
 * through a latch (struct result) and it sleeps on a condition variable
 * meanwhile, as CAF's scoped_actor and Erlang's receive do.
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
#include <time.h>

#include <troupe.h>

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
	MSG_INT = 1, /* payload: one uint64_t */
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

static void report(uint64_t n, double secs)
{
	printf("peer=troupe bench=%s n=%" PRIu64 " seconds=%.3f rate=%" PRIu64 "\n",
	       bench_name, n, secs, (uint64_t)((double)n / secs + 0.5));
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
	void *owned[4]; /* freed after the system is destroyed */
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
	report(msgs, secs);
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
	report(hops, secs);
	return EXIT_OK;
}

/* -- main ----------------------------------------------------------------- */

struct bench {
	const char *name;
	uint64_t n; /* default N */
	uint64_t x; /* default X; 0: the workload takes no X */
	int (*run)(struct bench_ctx *c, uint64_t n, uint64_t x);
};

static const struct bench benches[] = {
	{ "pingpong", 1000000, 0, bench_pingpong },
	{ "ring", 5000000, 503, bench_ring },
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
