/*
 * demo_supervisor: a supervisor keeps two flaky workers going.
 *
 * Each worker computes Collatz stopping times, one job per message, and
 * prints each result. Worker 0 is flaky: the CRASH_EVERY-th job of each of
 * its lives makes it fail (its behaviour returns an error). The one_for_one
 * supervisor sees the DOWN and starts a new worker 0 with fresh state (its
 * job count back to 0) while worker 1 carries on; the main thread, which
 * hands out jobs one at a time, gives the lost job to the new worker, so the
 * results keep coming in order.
 *
 * Then the main thread makes worker 0 crash as soon as it comes back, again
 * and again: more than MAX_RESTARTS restarts within PERIOD_MS, so the
 * supervisor gives up, stops worker 1 and fails with TR_ESUPERVISOR, which a
 * watcher actor that monitors it prints.
 *
 * The main thread is not an actor: it finds the workers' current references
 * with tr_supervisor_child and waits on a small condition variable.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <troupe.h>

#define WORKERS 2
#define JOBS 30
#define CRASH_EVERY 6      /* the 6th job of each life crashes worker 0 */
#define JOB_PAUSE_MS 60    /* between jobs: crashes come less often than the
				    intensity allows */
#define MAX_RESTARTS 3
#define PERIOD_MS 1000
#define WAIT_LIMIT_S 30    /* anything slower is a hang */

enum { MSG_JOB = 1, MSG_POISON, MSG_WATCH };

static void die(const char *what, int err)
{
	fprintf(stderr, "demo_supervisor: %s: %s\n", what, tr_strerror(err));
	exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* -- what main waits for ------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned answers;   /* results and crashes so far */
	bool crashed;       /* the latest answer was a crash */
	bool gave_up;       /* the watcher saw the supervisor stop */
	int reason;
} ev = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false, 0 };

static void post(bool crashed, bool gave_up, int reason)
{
	pthread_mutex_lock(&ev.mu);
	if (gave_up) {
		ev.gave_up = true;
		ev.reason = reason;
	} else {
		ev.answers++;
		ev.crashed = crashed;
	}
	pthread_cond_broadcast(&ev.cv);
	pthread_mutex_unlock(&ev.mu);
}

/* Waits for answer number `n`; true if it was a crash. */
static bool wait_answer(unsigned n)
{
	struct timespec dl;
	bool crashed;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += WAIT_LIMIT_S;
	pthread_mutex_lock(&ev.mu);
	while (ev.answers < n)
		if (pthread_cond_timedwait(&ev.cv, &ev.mu, &dl)) {
			fprintf(stderr, "demo_supervisor: no answer from the workers\n");
			exit(1);
		}
	crashed = ev.crashed;
	pthread_mutex_unlock(&ev.mu);
	return crashed;
}

/* -- workers ------------------------------------------------------------- */

struct worker {
	int id;
	unsigned life;  /* which start of this worker */
	unsigned jobs;  /* jobs done in this life: fresh state starts at 0 */
};

static atomic_uint lives[WORKERS];

static unsigned collatz_steps(uint64_t n)
{
	unsigned steps = 0;

	while (n != 1) {
		n = n % 2 ? 3 * n + 1 : n / 2;
		steps++;
	}
	return steps;
}

static int worker_beh(void *state, tr_msg *m)
{
	struct worker *w = state;
	const uint64_t *n = tr_msg_data(m);

	if (tr_msg_type(m) == MSG_POISON) {
		printf("  worker %d (life %u): poisoned, crashing\n", w->id, w->life);
		post(true, false, 0);
		return TR_EFAILED;
	}
	if (tr_msg_type(m) != MSG_JOB)
		return 0;
	if (++w->jobs == CRASH_EVERY && w->id == 0) {
		printf("  worker %d (life %u): job %" PRIu64 " is its %dth: crashing\n", w->id,
		       w->life, *n, CRASH_EVERY);
		post(true, false, 0);
		return TR_EFAILED; /* the supervisor sees the DOWN and restarts it */
	}
	printf("  worker %d (life %u, job %u of this life): job %" PRIu64 ": collatz(%" PRIu64
	       ") takes %u steps\n", w->id, w->life, w->jobs, *n, 1000 + *n * 37,
	       collatz_steps(1000 + *n * 37));
	post(false, false, 0);
	return 0;
}

static void worker_stopped(void *state, int reason)
{
	struct worker *w = state;

	if (reason == TR_OK)
		printf("  worker %d (life %u): stopped by its supervisor\n", w->id, w->life);
	free(w);
}

/* The child start function: runs inside the supervisor, each time with new
 * state. */
static int worker_start(tr_system *sys, void *arg, tr_ref *out)
{
	int id = (int)(intptr_t)arg;
	struct worker *w = calloc(1, sizeof(*w));
	tr_actor_opts o = { .behaviour = worker_beh, .state = w, .cleanup = worker_stopped };
	int err;

	if (!w)
		return TR_ENOMEM;
	w->id = id;
	w->life = atomic_load(&lives[id]) + 1;
	err = tr_spawn_opts(sys, &o, out);
	if (err) {
		free(w);
		return err;
	}
	atomic_store(&lives[id], w->life);
	if (w->life > 1)
		printf("supervisor: restarted worker %d (life %u)\n", id, w->life);
	else
		printf("supervisor: started worker %d\n", id);
	return TR_OK;
}

/* -- watcher ------------------------------------------------------------- */

static int watcher_beh(void *state, tr_msg *m)
{
	const tr_down *d = tr_msg_down(m);
	int err;

	(void)state;
	if (tr_msg_type(m) == MSG_WATCH) {
		err = tr_monitor(*(const tr_ref *)tr_msg_data(m));
		if (err)
			die("tr_monitor", err);
	} else if (d && tr_msg_type(m) == TR_MSG_DOWN) {
		printf("watcher: the supervisor stopped: %s (%s)\n", tr_err_name(d->reason),
		       tr_strerror(d->reason));
		post(false, true, d->reason);
	}
	return 0;
}

/* -- main ---------------------------------------------------------------- */

/* References of workers that crashed: the supervisor may not have seen the
 * DOWN yet, so tr_supervisor_child can still return one for a moment. */
static tr_ref crashed[WORKERS];

/* Current reference of worker i; waits while the supervisor restarts it. */
static tr_ref current(tr_supervisor *h, int i)
{
	for (int tries = 0; tries < WAIT_LIMIT_S * 1000; tries++) {
		tr_ref r = tr_supervisor_child(h, (size_t)i);

		if (!tr_ref_is_none(r) && !tr_ref_eq(r, crashed[i]))
			return r;
		sleep_ms(1);
	}
	fprintf(stderr, "demo_supervisor: worker %d never came back\n", i);
	exit(1);
}

int main(void)
{
	tr_child_spec specs[WORKERS];
	tr_sup_opts opts = { .strategy = TR_ONE_FOR_ONE, .max_restarts = MAX_RESTARTS,
			     .period_ms = PERIOD_MS, .children = specs, .nchildren = WORKERS };
	tr_supervisor *h;
	tr_sup_stats st;
	tr_system *sys;
	tr_ref sup, watcher;
	unsigned answers = 0, results = 0, crashes = 0;
	struct timespec dl;
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < WORKERS; i++)
		specs[i] = (tr_child_spec){ .name = NULL, .start = worker_start,
					    .arg = (void *)(intptr_t)i, .restart = TR_PERMANENT };
	if ((err = tr_system_new(NULL, &sys)) || (err = tr_system_start(sys)))
		die("system", err);
	if ((err = tr_supervisor_start(sys, &opts, &sup, &h)))
		die("tr_supervisor_start", err);
	if ((err = tr_spawn(sys, watcher_beh, NULL, &watcher)) ||
	    (err = tr_send(watcher, MSG_WATCH, &sup, sizeof(sup))))
		die("watcher", err);

	printf("-- %d jobs; worker 0 crashes on the %dth job of each life\n", JOBS, CRASH_EVERY);
	for (uint64_t job = 1; job <= JOBS;) {
		int i = (int)(job % WORKERS);
		tr_ref r = current(h, i);

		if ((err = tr_send(r, MSG_JOB, &job, sizeof(job))))
			die("tr_send", err); /* it only dies on our jobs: never TR_EDEAD */
		if (wait_answer(++answers)) {
			crashed[i] = r;
			crashes++;
			printf("main: job %" PRIu64 " was lost in the crash; handing it out again\n",
			       job);
			continue; /* same job, same worker slot, next life */
		}
		results++;
		job++;
		sleep_ms(JOB_PAUSE_MS);
	}
	tr_supervisor_stats(h, &st);
	printf("-- %u results, %u crashes, %" PRIu64 " restarts so far\n", results, crashes,
	       st.restarts);

	/* let the earlier restarts age out of the intensity window */
	sleep_ms(PERIOD_MS);
	printf("-- now worker 0 crashes whenever it comes back: more than %d restarts "
	       "within %d ms\n", MAX_RESTARTS, PERIOD_MS);
	for (;;) {
		pthread_mutex_lock(&ev.mu);
		bool gave_up = ev.gave_up;
		pthread_mutex_unlock(&ev.mu);
		tr_ref r = tr_supervisor_child(h, 0);

		if (gave_up)
			break;
		if (tr_ref_is_none(r) || tr_ref_eq(r, crashed[0])) {
			tr_supervisor_stats(h, &st);
			if (st.escalations) {
				/* giving up: wait for the watcher to say so */
				clock_gettime(CLOCK_REALTIME, &dl);
				dl.tv_sec += WAIT_LIMIT_S;
				pthread_mutex_lock(&ev.mu);
				while (!ev.gave_up)
					if (pthread_cond_timedwait(&ev.cv, &ev.mu, &dl))
						break;
				pthread_mutex_unlock(&ev.mu);
				break;
			}
			sleep_ms(1);
			continue;
		}
		if ((err = tr_send(r, MSG_POISON, NULL, 0)))
			die("tr_send", err);
		wait_answer(++answers);
		crashed[0] = r;
	}
	pthread_mutex_lock(&ev.mu);
	err = ev.gave_up ? ev.reason : TR_OK;
	pthread_mutex_unlock(&ev.mu);
	if (err != TR_ESUPERVISOR) {
		fprintf(stderr, "demo_supervisor: the supervisor did not give up\n");
		exit(1);
	}
	tr_supervisor_stats(h, &st);
	printf("-- supervisor: %" PRIu64 " restarts, %" PRIu64 " child exits, %" PRIu64
	       " escalation; both workers gone: %s\n", st.restarts, st.child_exits,
	       st.escalations,
	       tr_ref_is_none(tr_supervisor_child(h, 0)) &&
	       tr_ref_is_none(tr_supervisor_child(h, 1)) ? "yes" : "no");
	tr_system_destroy(&sys);
	tr_supervisor_release(&h);
	return 0;
}
