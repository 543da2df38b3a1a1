/*
 * demo_futures: asking actors for answers from a thread that is not one.
 *
 * A pool of factoriser actors answers requests "factorise n" with the prime
 * factors of n. main() is a plain thread: it cannot receive messages, so it
 * asks with tr_ask_future and gets a future per job, which it can wait on,
 * poll, or combine with others. Three phases:
 *
 *   1. all      a batch of jobs; wait for all of them, print the results in
 *               the order they were submitted (tr_future_wait_all)
 *   2. any      jobs of very different cost; handle each one as it
 *               completes, whatever its place in the batch
 *               (tr_future_wait_any)
 *   3. errors   a job for a worker that has stopped (TR_EDEAD) and a job
 *               that takes longer than its timeout (TR_ETIMEDOUT)
 *
 * Every answer is checked (the factors must multiply back to n), so the
 * demo exits 1 if anything comes back wrong or unexpected.
 *
 * A note on the workers: trial division is plain CPU work, and a behaviour
 * that computes for 300 ms holds one of the system's worker threads for
 * that long. That is fine here, where every actor is a factoriser; a
 * program that mixes such jobs with latency-sensitive actors would give the
 * jobs a system of their own.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <troupe.h>

#define POOL 4 /* factoriser actors; the system runs them on its worker threads */

#define MS 1000000ull /* nanoseconds */
/* How long main waits for a whole phase before calling it hung. */
#define PHASE_WAIT_NS (30000ull * MS)

enum msg_type {
	MSG_FACTOR = 1, /* request: uint64_t n */
	MSG_FACTORS,    /* reply: struct factors */
};

/* A 64-bit number has at most 15 distinct prime factors (2 x 3 x ... x 47). */
#define MAX_PRIMES 15

/* The answer to one job. Small enough (152 bytes) to be copied into the
 * reply message, so nothing is allocated per job. */
struct factors {
	uint64_t n;
	uint64_t p[MAX_PRIMES]; /* primes, ascending */
	uint8_t e[MAX_PRIMES];  /* their exponents */
	uint8_t count;
	uint8_t worker; /* which factoriser answered */
};

_Static_assert(sizeof(struct factors) <= TR_MSG_INLINE_MAX, "factors must travel inline");

static bool failed; /* an unexpected outcome: the exit status says so */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void must(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "demo_futures: %s: %s\n", what, tr_strerror(err));
		exit(1);
	}
}

/* -- the factoriser actors ----------------------------------------------- */

/* Trial division: cheap for small factors, slow when the second largest
 * prime factor is big, which is what makes the jobs' costs differ. */
static void factorise(uint64_t n, struct factors *f)
{
	uint64_t d;

	memset(f, 0, sizeof *f);
	f->n = n;
	for (d = 2; d <= n / d; d += d == 2 ? 1 : 2) {
		uint8_t e = 0;

		while (n % d == 0) {
			n /= d;
			e++;
		}
		if (e) {
			f->p[f->count] = d;
			f->e[f->count++] = e;
		}
	}
	if (n > 1) {
		f->p[f->count] = n;
		f->e[f->count++] = 1;
	}
}

struct factoriser {
	uint8_t index;
};

static int factoriser_recv(void *state, tr_msg *m)
{
	struct factoriser *self = state;
	struct factors f;
	uint64_t n;

	/* Only requests make sense here: a plain send would have nobody to
	 * answer. Refusing them quietly keeps the worker alive. */
	if (!tr_msg_is_request(m) || tr_msg_type(m) != MSG_FACTOR || tr_msg_size(m) != sizeof n)
		return 0;
	memcpy(&n, tr_msg_data(m), sizeof n);
	factorise(n, &f);
	f.worker = self->index;
	/*
	 * The reply goes to whoever asked, here a future, without the worker
	 * knowing. If the asker gave up meanwhile (its request timed out) the
	 * runtime drops the reply and counts it as late: not this actor's
	 * business, so the result is ignored.
	 */
	(void)tr_reply(m, MSG_FACTORS, &f, sizeof f);
	return 0;
}

/* -- main's side ---------------------------------------------------------- */

/* Asks worker `to` to factorise n; timeout_ns 0 is the system's default. */
static tr_future *submit(tr_ref to, uint64_t n, uint64_t timeout_ns)
{
	tr_future *f;

	must(tr_ask_future(to, MSG_FACTOR, &n, sizeof n, timeout_ns, &f), "tr_ask_future");
	return f;
}

/* Prints "n = p^e x q ..." and checks that it multiplies back to n. */
static void print_factors(const struct factors *f)
{
	uint64_t product = 1;
	unsigned i, k;

	printf("%" PRIu64 " =", f->n);
	for (i = 0; i < f->count; i++) {
		printf("%s %" PRIu64, i ? " x" : "", f->p[i]);
		if (f->e[i] > 1)
			printf("^%u", f->e[i]);
		for (k = 0; k < f->e[i]; k++)
			product *= f->p[i];
	}
	if (f->count == 1 && f->e[0] == 1)
		printf(" (prime)");
	if (product != f->n || f->count == 0) {
		printf("  WRONG");
		failed = true;
	}
	printf("\n");
}

/* Prints a completed future's outcome: the factors or the error. */
static void print_outcome(tr_future *f)
{
	int status = tr_future_poll(f);
	const tr_msg *reply;
	struct factors fs;

	if (status != TR_OK) {
		printf("%s (%s)\n", tr_err_name(status), tr_strerror(status));
		failed = true;
		return;
	}
	reply = tr_future_reply(f);
	if (tr_msg_type(reply) != MSG_FACTORS || tr_msg_size(reply) != sizeof(struct factors)) {
		printf("unexpected reply\n");
		failed = true;
		return;
	}
	/* copied out: the reply's bytes make no alignment promise */
	memcpy(&fs, tr_msg_data(reply), sizeof fs);
	printf("worker %u: ", fs.worker);
	print_factors(&fs);
}

/* Phase 1: submit a batch, wait for all of it, read it in order. */
static void phase_all(const tr_ref *pool)
{
	static const uint64_t jobs[] = {
		600851475143u,         /* Project Euler's no. 3 */
		1234567890u,
		4294967297u,           /* 2^32 + 1, Fermat's "prime" */
		18446744073709551615u, /* 2^64 - 1 */
		9007199254740993u,     /* 2^53 + 1: a 14-digit prime factor */
		1000120000351u,        /* two 7-digit primes */
		3486784401u,           /* 3^20 */
		1000000000039u,        /* prime: every odd divisor up to 10^6 is tried */
	};
	enum { N = sizeof jobs / sizeof jobs[0] };
	tr_future *fs[N];
	double t0 = now_ms();
	size_t i;
	int err;

	printf("1. wait for all: %d jobs on %d workers\n", N, POOL);
	/* round robin: job i goes to worker i % POOL */
	for (i = 0; i < N; i++)
		fs[i] = submit(pool[i % POOL], jobs[i], 0);
	err = tr_future_wait_all(fs, N, PHASE_WAIT_NS);
	if (err) {
		printf("   not all done: %s\n", tr_err_name(err));
		failed = true;
	}
	printf("   all done after %.1f ms; in submission order:\n", now_ms() - t0);
	/* each future answers its own request: fs[i] is jobs[i] */
	for (i = 0; i < N; i++) {
		printf("   #%zu ", i);
		print_outcome(fs[i]);
		tr_future_destroy(&fs[i]);
	}
}

/* Phase 2: the same pool, jobs from 0.1 ms to 200 ms, handled as they complete. */
static void phase_any(const tr_ref *pool)
{
	static const uint64_t jobs[] = {
		3600006840001133u, /* 60000011 x 60000103: the slowest */
		10010600309u,      /* 100003 x 100103 */
		900003300000109u,  /* 30000001 x 30000109 */
		1000120000351u,    /* 1000003 x 1000117 */
		100001220001957u,  /* 10000019 x 10000103 */
		9000360001751u,    /* 3000017 x 3000103 */
		600851475143u,     /* small factors: instant */
		1000000000039u,    /* prime */
	};
	enum { N = sizeof jobs / sizeof jobs[0] };
	tr_future *fs[N];
	double t0 = now_ms();
	size_t i, left;
	int err;

	printf("2. as completed: %d jobs of different cost\n", N);
	for (i = 0; i < N; i++)
		fs[i] = submit(pool[i % POOL], jobs[i], 0);
	/*
	 * tr_future_wait_any returns the lowest index that has completed and
	 * skips NULL entries; destroying a handled future sets its entry to
	 * NULL, so each round finds the next one to complete.
	 */
	for (left = N; left > 0; left--) {
		err = tr_future_wait_any(fs, N, PHASE_WAIT_NS, &i);
		if (err) {
			printf("   %zu jobs never completed: %s\n", left, tr_err_name(err));
			failed = true;
			for (i = 0; i < N; i++)
				tr_future_destroy(&fs[i]); /* abandons the pending ones */
			return;
		}
		printf("   %6.1f ms  #%zu ", now_ms() - t0, i);
		print_outcome(fs[i]);
		tr_future_destroy(&fs[i]);
	}
}

/* Prints a failed job's outcome and checks it is the one expected. */
static void expect(int got, int want, double ms)
{
	printf("%s (%s) after %.1f ms\n", tr_err_name(got), tr_strerror(got), ms);
	if (got != want) {
		printf("   expected %s\n", tr_err_name(want));
		failed = true;
	}
}

/* Phase 3: what a caller sees when a job cannot be answered. */
static void phase_errors(tr_system *sys, const tr_ref *pool)
{
	tr_ref gone = pool[POOL - 1];
	tr_future *f, *g;
	tr_stats st;
	double t0;
	int err;

	printf("3. errors\n");

	/*
	 * A worker that stopped: tr_stop queues the stop behind the worker's
	 * mailbox, so the job below either finds it gone or arrives after the
	 * stop and is never handled. Both end the same way: TR_EDEAD, at once,
	 * instead of a wait for the timeout.
	 */
	must(tr_stop(gone), "tr_stop");
	t0 = now_ms();
	f = submit(gone, 600851475143u, 0);
	err = tr_future_wait(f, PHASE_WAIT_NS);
	printf("   job for a stopped worker: ");
	expect(err, TR_EDEAD, now_ms() - t0);
	tr_future_destroy(&f);

	/*
	 * A job slower than its deadline: two 9-digit prime factors take a few
	 * hundred ms, the request allows 50. The future completes with
	 * TR_ETIMEDOUT when the deadline passes; the worker cannot be
	 * interrupted and finishes anyway, and its answer, when it comes, is
	 * dropped and counted in tr_stats.late_replies.
	 */
	t0 = now_ms();
	f = submit(pool[0], 10000013000000861u, 50 * MS); /* 100000007 x 100000123 */
	err = tr_future_wait(f, PHASE_WAIT_NS);
	printf("   job with a 50 ms timeout: ");
	expect(err, TR_ETIMEDOUT, now_ms() - t0);

	/* A quick job for the same worker waits behind the slow one, so its
	 * answer also tells us the late one has been sent. */
	g = submit(pool[0], 1234567890u, 0);
	err = tr_future_wait(g, PHASE_WAIT_NS);
	printf("   a quick job queued behind it: %s after %.1f ms\n", tr_err_name(err),
	       now_ms() - t0);
	if (err)
		failed = true;
	must(tr_system_stats(sys, &st), "tr_system_stats");
	printf("   late replies discarded so far: %" PRIu64 "\n", st.late_replies);
	if (st.late_replies != 1)
		failed = true;
	tr_future_destroy(&g);
	tr_future_destroy(&f);
}

int main(void)
{
	static struct factoriser state[POOL]; /* outlives the actors */
	tr_ref pool[POOL];
	tr_system *sys;
	unsigned i;

	/* the defaults: one worker thread per CPU, requests time out after 5 s */
	must(tr_system_new(NULL, &sys), "tr_system_new");
	must(tr_system_start(sys), "tr_system_start");
	for (i = 0; i < POOL; i++) {
		state[i].index = (uint8_t)i;
		must(tr_spawn(sys, factoriser_recv, &state[i], &pool[i]), "tr_spawn");
	}

	phase_all(pool);
	phase_any(pool);
	phase_errors(sys, pool);

	tr_system_destroy(&sys); /* graceful: the workers finish their jobs first */
	printf("%s\n", failed ? "something went wrong" : "all as expected");
	return failed ? 1 : 0;
}
