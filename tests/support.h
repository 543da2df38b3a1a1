/*
 * Test support: a latch that actors count down and a non-actor thread waits
 * on. Tests need to know when actors are done without asserting timings, so
 * waits are bounded by a generous deadline that only catches hangs.
 */
#ifndef TR_TEST_SUPPORT_H
#define TR_TEST_SUPPORT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct tr_test_latch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t count;
} tr_test_latch;

static inline void tr_test_latch_init(tr_test_latch *l, uint64_t count)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, &a);
	pthread_condattr_destroy(&a);
	l->count = count;
}

static inline void tr_test_latch_destroy(tr_test_latch *l)
{
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
}

static inline void tr_test_latch_count_down(tr_test_latch *l)
{
	pthread_mutex_lock(&l->mu);
	if (l->count > 0 && --l->count == 0)
		pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

/* Waits until the count reaches zero; false if `seconds` passed first. */
static inline bool tr_test_latch_wait(tr_test_latch *l, int seconds)
{
	struct timespec dl;
	bool ok = true;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += seconds;
	pthread_mutex_lock(&l->mu);
	while (l->count > 0) {
		if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) == ETIMEDOUT) {
			ok = l->count == 0;
			break;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return ok;
}

static inline double tr_test_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* TR_TEST_SUPPORT_H */
