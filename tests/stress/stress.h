/*
 * Shared by the stress programs: checks that count instead of abort (each
 * program ends with the one "N passed, N failed" line CI reads), argument
 * parsing, a sleep and a seeded generator. Plain C, no test framework:
 * these programs also run under ThreadSanitizer, where Criterion cannot.
 */
#ifndef TR_STRESS_H
#define TR_STRESS_H

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <troupe.h>

static unsigned n_passed, n_failed;

static bool check_(bool ok, int line, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		n_passed++;
		return true;
	}
	n_failed++;
	fprintf(stderr, "%s:%d: FAILED: ", __FILE__, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return false;
}

#define CHECK(cond, ...) check_((cond), __LINE__, __VA_ARGS__)
#define CHECK_EQ(a, b, what)                                                   \
	check_((uint64_t)(a) == (uint64_t)(b), __LINE__, "%s: %" PRIu64          \
	       " != %" PRIu64, (what), (uint64_t)(a), (uint64_t)(b))

/* A positive integer argument; exits 2 (usage) otherwise. */
static inline uint64_t parse_u64(const char *s, const char *prog)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end || v == 0) {
		fprintf(stderr, "usage: %s SCALE [SEED] (positive integers)\n", prog);
		exit(2);
	}
	return v;
}

static inline void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* xorshift64*: reproducible from the printed seed. */
static inline uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

/*
 * Pacing for senders that could outrun their receivers: true while more
 * than backlog_max accepted messages wait, so the caller should hold off.
 * Reads the runtime's counters only to steer the pace (needs
 * tr_test_now() from tests/support.h); if they stop moving for
 * STRESS_PACE_GIVE_UP_S, pacing switches off for good and the program's
 * final checks say why.
 */
#define STRESS_PACE_GIVE_UP_S 10.0
static atomic_bool stress_pacing_off;

static inline bool stress_must_wait(tr_system *sys, unsigned backlog_max, double *since)
{
	tr_stats st;

	if (atomic_load_explicit(&stress_pacing_off, memory_order_relaxed) ||
	    tr_system_stats(sys, &st) != TR_OK ||
	    st.sent <= st.delivered + st.undelivered + backlog_max) {
		*since = 0;
		return false;
	}
	if (*since == 0) {
		*since = tr_test_now();
	} else if (tr_test_now() - *since > STRESS_PACE_GIVE_UP_S) {
		if (!atomic_exchange(&stress_pacing_off, true))
			fprintf(stderr, "note: backlog stuck above %u for %.0f s, pacing off\n",
				backlog_max, STRESS_PACE_GIVE_UP_S);
		return false;
	}
	return true;
}

#endif /* TR_STRESS_H */
