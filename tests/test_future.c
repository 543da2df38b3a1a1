/*
 * Unit tests for futures (troupe/ask.h): tr_ask_future from plain threads,
 * wait / poll / reply, every outcome, completion callbacks, wait_all and
 * wait_any, destroying a pending future, pointer replies and the error
 * paths.
 *
 * To keep a future pending for as long as a test needs, the server is
 * parked on a latch, or keeps the request's reply address and answers only
 * when the test tells it to. Waits are bounded only to catch hangs; the one
 * timing check is that nothing times out early.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "support.h"

#define WAIT_S 30
#define MS 1000000ull
#define WAIT_NS ((int64_t)WAIT_S * 1000000000)
#define LONG_NS (120000 * MS)

TestSuite(future, .timeout = 120);

enum {
	T_REQ = 0x500,
	T_REP,
	T_FLUSH,
	T_BLOCK,
	T_RELEASE,
	T_STOP_SELF,
};

/* ---- time and systems ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static tr_system *sys_new_cfg(unsigned workers, uint32_t ask_timeout_ms)
{
	tr_config cfg;
	tr_system *sys = NULL;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = workers;
	cfg.ask_timeout_ms = ask_timeout_ms;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	return sys;
}

static tr_system *sys_start(unsigned workers)
{
	tr_system *sys = sys_new_cfg(workers, 0);

	cr_assert_eq(tr_system_start(sys), TR_OK);
	return sys;
}

static tr_stats sys_finish(tr_system **sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_shutdown(*sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(*sys, &st), TR_OK);
	tr_system_destroy(sys);
	cr_assert_null(*sys);
	return st;
}

static void send_ok(tr_ref to, uint32_t type, const void *data, size_t size)
{
	int rc = tr_send(to, type, data, size);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

static void flush(tr_ref to)
{
	tr_test_latch l;
	tr_test_latch *p = &l;

	tr_test_latch_init(&l, 1);
	send_ok(to, T_FLUSH, &p, sizeof(p));
	cr_assert(tr_test_latch_wait(&l, WAIT_S), "flush never arrived");
	tr_test_latch_destroy(&l);
}

static atomic_int dtor_calls;

static void counting_dtor(void *p)
{
	atomic_fetch_add(&dtor_calls, 1);
	free(p);
}

/* ---- server ---- */

enum { S_ECHO, S_HOLD, S_SILENT, S_REPLY_PTR };

#define MAXHOLD 64

struct server {
	int mode;
	atomic_uint requests;
	tr_reply_addr last_rt;
	tr_ref last_sender;
	uint16_t last_flags;
	tr_reply_addr held[MAXHOLD];
	uint64_t held_val[MAXHOLD];
	unsigned nheld;
	int release_rc;
	bool stop_after_block;
	tr_test_latch entered, release;
	tr_test_latch got_req;
	tr_test_latch released; /* one count per T_RELEASE handled */
};

static void server_init(struct server *s, int mode, uint64_t expect_req)
{
	memset(s, 0, sizeof(*s));
	s->mode = mode;
	s->release_rc = 12345;
	tr_test_latch_init(&s->entered, 1);
	tr_test_latch_init(&s->release, 1);
	tr_test_latch_init(&s->got_req, expect_req);
	tr_test_latch_init(&s->released, 0);
}

static int server_beh(void *state, tr_msg *m)
{
	struct server *s = state;
	uint64_t v = 0, r;
	void *p;

	switch (tr_msg_type(m)) {
	case T_FLUSH:
		memcpy(&p, tr_msg_data(m), sizeof(p));
		tr_test_latch_count_down(p);
		return 0;
	case T_BLOCK:
		tr_test_latch_count_down(&s->entered);
		tr_test_latch_wait(&s->release, WAIT_S);
		if (s->stop_after_block)
			tr_stop_self(TR_OK);
		return 0;
	case T_STOP_SELF:
		tr_stop_self(TR_OK);
		return 0;
	case T_RELEASE:
		/* answer the held request whose payload is `v` */
		memcpy(&v, tr_msg_data(m), sizeof(v));
		for (unsigned i = 0; i < s->nheld; i++) {
			if (s->held_val[i] == v) {
				r = v + 1000;
				s->release_rc = tr_reply_to(s->held[i], T_REP, &r, sizeof(r));
				break;
			}
		}
		tr_test_latch_count_down(&s->released);
		return 0;
	}
	if (!tr_msg_is_request(m))
		return 0;
	if (tr_msg_size(m) >= sizeof(v))
		memcpy(&v, tr_msg_data(m), sizeof(v));
	s->last_rt = tr_msg_reply_to(m);
	s->last_sender = tr_msg_sender(m);
	s->last_flags = m->flags;
	r = v + 1000;
	switch (s->mode) {
	case S_ECHO:
		tr_reply(m, T_REP, &r, sizeof(r));
		break;
	case S_HOLD:
		if (s->nheld < MAXHOLD) {
			s->held[s->nheld] = tr_msg_reply_to(m);
			s->held_val[s->nheld++] = v;
		}
		break;
	case S_SILENT:
		break;
	case S_REPLY_PTR: {
		uint64_t *q = malloc(sizeof(*q));
		void *qp = q;

		if (q) {
			*q = r;
			if (tr_reply_ptr(tr_msg_reply_to(m), T_REP, &qp, counting_dtor) != TR_OK)
				free(qp);
		}
		break;
	}
	}
	atomic_fetch_add(&s->requests, 1);
	tr_test_latch_count_down(&s->got_req);
	return 0;
}

static tr_ref spawn_server(tr_system *sys, struct server *s)
{
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn(sys, server_beh, s, &r), TR_OK);
	return r;
}

static tr_future *ask(tr_ref to, uint64_t v, uint64_t timeout_ns)
{
	tr_future *f = NULL;
	int rc = tr_ask_future(to, T_REQ, &v, sizeof(v), timeout_ns, &f);

	cr_assert_eq(rc, TR_OK, "tr_ask_future: %s", tr_err_name(rc));
	cr_assert_not_null(f);
	return f;
}

static uint64_t reply_val(tr_future *f)
{
	tr_msg *m = tr_future_reply(f);
	uint64_t v = 0;

	cr_assert_not_null(m, "no reply");
	cr_assert_eq(tr_msg_type(m), T_REP);
	cr_assert_eq(tr_msg_size(m), sizeof(v));
	memcpy(&v, tr_msg_data(m), sizeof(v));
	return v;
}

static void expect_rc(int got, int want, const char *what)
{
	cr_assert_eq(got, want, "%s: %s, want %s", what, tr_err_name(got), tr_err_name(want));
}

/* ------------------------------------------------------------ replies */

Test(future, wait_gets_reply)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;
	tr_msg *m;

	server_init(&s, S_ECHO, 1);
	srv = spawn_server(sys, &s);
	f = ask(srv, 7, LONG_NS);
	expect_rc(tr_future_wait(f, -1), TR_OK, "wait");
	cr_assert_eq(reply_val(f), 1007);
	m = tr_future_reply(f);
	cr_assert(m->flags & TR_MSG_F_REPLY);
	expect_rc(tr_future_poll(f), TR_OK, "poll after completion");
	expect_rc(tr_future_wait(f, 0), TR_OK, "second wait");
	cr_assert_eq(tr_future_reply(f), m, "reply changed");
	/* what the server saw */
	cr_assert(s.last_flags & TR_MSG_F_REQUEST);
	cr_assert_eq(s.last_rt.to, 0, "a future's reply address has to == 0");
	cr_assert_neq(s.last_rt.corr, 0);
	cr_assert(tr_ref_is_none(s.last_sender), "request from main: sender is not NONE");
	tr_future_destroy(&f);
	cr_assert_null(f);
	sys_finish(&sys);
}

Test(future, poll_pending_until_server_replies)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;
	uint64_t t0;

	server_init(&s, S_ECHO, 1);
	srv = spawn_server(sys, &s);
	send_ok(srv, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.entered, WAIT_S));
	f = ask(srv, 1, LONG_NS);
	expect_rc(tr_future_poll(f), TR_EAGAIN, "poll while the server is blocked");
	cr_assert_null(tr_future_reply(f));
	t0 = now_ns();
	expect_rc(tr_future_wait(f, 5 * (int64_t)MS), TR_EAGAIN, "short wait");
	cr_assert_geq(now_ns() - t0, 5 * MS, "wait returned TR_EAGAIN after %.3f ms of 5",
		      (double)(now_ns() - t0) / 1e6);
	expect_rc(tr_future_poll(f), TR_EAGAIN, "poll");
	tr_test_latch_count_down(&s.release);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait after release");
	expect_rc(tr_future_poll(f), TR_OK, "poll after reply");
	cr_assert_eq(reply_val(f), 1001);
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ outcomes */

Test(future, request_timeout_not_before_timeout)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;
	uint64_t t0, v = 1;
	tr_stats st;
	int rc;

	server_init(&s, S_HOLD, 1);
	srv = spawn_server(sys, &s);
	t0 = now_ns();
	f = ask(srv, 1, 50 * MS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_ETIMEDOUT, "wait");
	cr_assert_geq(now_ns() - t0, 50 * MS, "timed out after %.3f ms of 50",
		      (double)(now_ns() - t0) / 1e6);
	cr_assert_null(tr_future_reply(f));
	expect_rc(tr_future_poll(f), TR_ETIMEDOUT, "poll");
	/* the answer comes after all: late; the future keeps its outcome */
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	rc = tr_reply_to(s.held[0], T_REP, &v, sizeof(v));
	expect_rc(rc, TR_OK, "late reply to a future that still exists (accepted, discarded)");
	expect_rc(tr_future_poll(f), TR_ETIMEDOUT, "poll after the late reply");
	cr_assert_null(tr_future_reply(f));
	tr_future_destroy(&f);
	st = sys_finish(&sys);
	cr_assert_eq(st.late_replies, 1);
}

Test(future, default_timeout_from_config)
{
	tr_system *sys = sys_new_cfg(2, 100);
	struct server s;
	tr_future *f;
	uint64_t t0;

	cr_assert_eq(tr_system_start(sys), TR_OK);
	server_init(&s, S_SILENT, 1);
	t0 = now_ns();
	f = ask(spawn_server(sys, &s), 1, 0);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_ETIMEDOUT, "wait");
	cr_assert_geq(now_ns() - t0, 100 * MS, "default timeout ended after %.3f ms of 100",
		      (double)(now_ns() - t0) / 1e6);
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* A timeout of ~584 years must not wrap into the past. */
Test(future, huge_timeout_does_not_expire)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;
	uint64_t v = 2;

	server_init(&s, S_HOLD, 1);
	srv = spawn_server(sys, &s);
	f = ask(srv, 2, UINT64_MAX);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	sleep_ms(50);
	expect_rc(tr_future_poll(f), TR_EAGAIN, "request with timeout UINT64_MAX");
	send_ok(srv, T_RELEASE, &v, sizeof(v));
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	tr_future_destroy(&f);
	sys_finish(&sys);
}

static void wait_stopped(tr_system *sys, uint64_t n)
{
	tr_stats st;
	uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;

	do {
		cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
		if (st.stopped >= n)
			return;
		sleep_ms(1);
	} while (now_ns() < end);
	cr_assert_fail("actor never stopped");
}

Test(future, dead_target_is_edead_at_once)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;

	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	send_ok(srv, T_STOP_SELF, NULL, 0);
	wait_stopped(sys, 1);
	f = ask(srv, 1, LONG_NS);
	expect_rc(tr_future_poll(f), TR_EDEAD, "poll right after asking a dead actor");
	cr_assert_null(tr_future_reply(f));
	tr_future_destroy(&f);
	sys_finish(&sys);
}

Test(future, target_stops_with_request_queued)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;

	server_init(&s, S_ECHO, 0);
	s.stop_after_block = true;
	srv = spawn_server(sys, &s);
	send_ok(srv, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.entered, WAIT_S));
	f = ask(srv, 1, LONG_NS);
	tr_test_latch_count_down(&s.release);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_EDEAD, "wait");
	cr_assert_eq(atomic_load(&s.requests), 0);
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* The server took the request, kept it for a deferred answer and stopped
 * without giving it: "stopped before answering" is TR_EDEAD. */
Test(future, target_stops_later_without_answering)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;

	server_init(&s, S_HOLD, 1);
	srv = spawn_server(sys, &s);
	f = ask(srv, 1, 10000 * MS);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	expect_rc(tr_future_poll(f), TR_EAGAIN, "poll while held");
	send_ok(srv, T_STOP_SELF, NULL, 0);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_EDEAD, "wait");
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ callbacks */

struct cb {
	atomic_int calls;
	int status;
	tr_future *f;
	void *ctx;
	pthread_t thread;
	tr_test_latch done;
};

static void cb_fn(void *ctx, tr_future *f, int status)
{
	struct cb *c = ctx;

	c->status = status;
	c->f = f;
	c->ctx = ctx;
	c->thread = pthread_self();
	atomic_fetch_add(&c->calls, 1);
	tr_test_latch_count_down(&c->done);
}

static void cb_init(struct cb *c)
{
	memset(c, 0, sizeof(*c));
	c->status = 12345;
	tr_test_latch_init(&c->done, 1);
}

Test(future, then_before_completion)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct cb c;
	tr_ref srv;
	tr_future *f;

	cb_init(&c);
	server_init(&s, S_ECHO, 1);
	srv = spawn_server(sys, &s);
	send_ok(srv, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.entered, WAIT_S));
	f = ask(srv, 3, LONG_NS);
	expect_rc(tr_future_then(f, cb_fn, &c), TR_OK, "then");
	cr_assert_eq(atomic_load(&c.calls), 0, "callback before completion");
	expect_rc(tr_future_then(f, cb_fn, &c), TR_EINVAL, "second callback");
	tr_test_latch_count_down(&s.release);
	cr_assert(tr_test_latch_wait(&c.done, WAIT_S), "callback never ran");
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	cr_assert_eq(reply_val(f), 1003);
	sleep_ms(10);
	cr_assert_eq(atomic_load(&c.calls), 1);
	expect_rc(c.status, TR_OK, "callback status");
	cr_assert_eq(c.f, f);
	cr_assert_eq(c.ctx, &c);
	cr_assert_not(pthread_equal(c.thread, pthread_self()), "ran on the waiting thread");
	tr_future_destroy(&f);
	sys_finish(&sys);
}

Test(future, then_after_completion_runs_at_once_on_caller)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct cb c;
	tr_future *f;

	cb_init(&c);
	server_init(&s, S_ECHO, 1);
	f = ask(spawn_server(sys, &s), 4, LONG_NS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	expect_rc(tr_future_then(f, cb_fn, &c), TR_OK, "then");
	cr_assert_eq(atomic_load(&c.calls), 1, "callback of a complete future must run at once");
	expect_rc(c.status, TR_OK, "callback status");
	cr_assert(pthread_equal(c.thread, pthread_self()));
	expect_rc(tr_future_then(f, cb_fn, &c), TR_EINVAL, "second callback");
	cr_assert_eq(atomic_load(&c.calls), 1);
	tr_future_destroy(&f);
	sys_finish(&sys);
}

Test(future, then_with_timeout_and_dead_target)
{
	tr_system *sys = sys_start(2);
	struct server s, d;
	struct cb c1, c2;
	tr_ref dead;
	tr_future *f1, *f2;

	cb_init(&c1);
	cb_init(&c2);
	server_init(&s, S_SILENT, 1);
	server_init(&d, S_SILENT, 0);
	dead = spawn_server(sys, &d);
	send_ok(dead, T_STOP_SELF, NULL, 0);
	wait_stopped(sys, 1);
	f1 = ask(spawn_server(sys, &s), 1, 20 * MS);
	expect_rc(tr_future_then(f1, cb_fn, &c1), TR_OK, "then");
	f2 = ask(dead, 1, LONG_NS);
	expect_rc(tr_future_then(f2, cb_fn, &c2), TR_OK, "then");
	cr_assert(tr_test_latch_wait(&c1.done, WAIT_S));
	cr_assert(tr_test_latch_wait(&c2.done, WAIT_S));
	expect_rc(c1.status, TR_ETIMEDOUT, "timeout callback");
	expect_rc(c2.status, TR_EDEAD, "dead target callback");
	sleep_ms(10);
	cr_assert_eq(atomic_load(&c1.calls), 1);
	cr_assert_eq(atomic_load(&c2.calls), 1);
	tr_future_destroy(&f1);
	tr_future_destroy(&f2);
	sys_finish(&sys);
}

/* Callbacks set while the reply races in: each runs exactly once. */
#define RACE_N 2000

static atomic_int race_calls[RACE_N];
static atomic_int race_bad;

static void race_cb(void *ctx, tr_future *f, int status)
{
	uintptr_t i = (uintptr_t)ctx;

	(void)f;
	if (status != TR_OK || i >= RACE_N)
		atomic_fetch_add(&race_bad, 1);
	else
		atomic_fetch_add(&race_calls[i], 1);
}

Test(future, then_racing_completion_runs_once)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future **fs = calloc(RACE_N, sizeof(*fs));

	cr_assert_not_null(fs);
	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	for (uintptr_t i = 0; i < RACE_N; i++) {
		fs[i] = ask(srv, i, LONG_NS);
		if (i % 3)
			sched_yield();
		expect_rc(tr_future_then(fs[i], race_cb, (void *)i), TR_OK, "then");
	}
	expect_rc(tr_future_wait_all(fs, RACE_N, WAIT_NS), TR_OK, "wait_all");
	/* a callback may still be finishing on the completing thread */
	for (uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS; now_ns() < end;) {
		int n = 0;

		for (int i = 0; i < RACE_N; i++)
			n += atomic_load(&race_calls[i]) > 0;
		if (n == RACE_N)
			break;
		sleep_ms(1);
	}
	sleep_ms(10);
	cr_assert_eq(atomic_load(&race_bad), 0);
	for (int i = 0; i < RACE_N; i++) {
		cr_assert_eq(atomic_load(&race_calls[i]), 1, "future %d: callback ran %d times", i,
			     atomic_load(&race_calls[i]));
		cr_assert_eq(reply_val(fs[i]), (uint64_t)i + 1000);
		tr_future_destroy(&fs[i]);
	}
	free(fs);
	sys_finish(&sys);
}

/* Several threads may wait on one future. */
struct waiter {
	tr_future *f;
	int rc;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	w->rc = tr_future_wait(w->f, WAIT_NS);
	return NULL;
}

Test(future, several_threads_wait_on_one_future)
{
	enum { W = 3 };
	tr_system *sys = sys_start(2);
	struct server s;
	struct waiter w[W];
	pthread_t th[W];
	tr_ref srv;
	tr_future *f;

	server_init(&s, S_ECHO, 1);
	srv = spawn_server(sys, &s);
	send_ok(srv, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.entered, WAIT_S));
	f = ask(srv, 8, LONG_NS);
	for (int i = 0; i < W; i++) {
		w[i] = (struct waiter){ f, 12345 };
		cr_assert_eq(pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
	}
	sleep_ms(20); /* let them sleep */
	tr_test_latch_count_down(&s.release);
	for (int i = 0; i < W; i++) {
		pthread_join(th[i], NULL);
		expect_rc(w[i].rc, TR_OK, "waiter");
	}
	cr_assert_eq(reply_val(f), 1008);
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ combining */

Test(future, wait_all_results_in_order)
{
	enum { N = 32, NS = 4 };
	tr_system *sys = sys_start(2);
	struct server s[NS], slow;
	tr_ref srv[NS];
	tr_future *fs[N];
	uint64_t t0;

	for (int i = 0; i < NS; i++) {
		server_init(&s[i], S_ECHO, N / NS);
		srv[i] = spawn_server(sys, &s[i]);
	}
	for (uint64_t i = 0; i < N; i++)
		fs[i] = ask(srv[(i * 7) % NS], i, LONG_NS);
	expect_rc(tr_future_wait_all(fs, N, WAIT_NS), TR_OK, "wait_all");
	for (uint64_t i = 0; i < N; i++) {
		expect_rc(tr_future_poll(fs[i]), TR_OK, "poll after wait_all");
		cr_assert_eq(reply_val(fs[i]), i + 1000, "fs[%llu] holds another request's reply",
			     (unsigned long long)i);
		tr_future_destroy(&fs[i]);
	}

	/* one still pending: TR_EAGAIN after the wait, not before */
	server_init(&slow, S_SILENT, 1);
	fs[0] = ask(srv[0], 0, LONG_NS);
	fs[1] = ask(spawn_server(sys, &slow), 1, LONG_NS);
	t0 = now_ns();
	expect_rc(tr_future_wait_all(fs, 2, 10 * (int64_t)MS), TR_EAGAIN, "wait_all, one pending");
	cr_assert_geq(now_ns() - t0, 10 * MS);
	expect_rc(tr_future_wait(fs[0], WAIT_NS), TR_OK, "the other one");
	tr_future_destroy(&fs[0]);
	tr_future_destroy(&fs[1]);
	sys_finish(&sys);
}

/* The server answers the held requests in an order the test picks; each
 * wait_any must name exactly the one just answered. */
Test(future, wait_any_as_completed)
{
	enum { N = 8 };
	static const uint64_t order[N] = { 5, 2, 7, 0, 3, 6, 1, 4 };
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *fs[N];
	size_t idx = 999;
	uint64_t t0;

	server_init(&s, S_HOLD, N);
	srv = spawn_server(sys, &s);
	for (uint64_t i = 0; i < N; i++)
		fs[i] = ask(srv, i, LONG_NS);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	t0 = now_ns();
	expect_rc(tr_future_wait_any(fs, N, 10 * (int64_t)MS, &idx), TR_EAGAIN,
		  "wait_any, all pending");
	cr_assert_geq(now_ns() - t0, 10 * MS);
	for (int k = 0; k < N; k++) {
		uint64_t want = order[k];

		send_ok(srv, T_RELEASE, &want, sizeof(want));
		idx = 999;
		expect_rc(tr_future_wait_any(fs, N, WAIT_NS, &idx), TR_OK, "wait_any");
		cr_assert_eq(idx, want, "step %d: wait_any named %zu, answered %llu", k, idx,
			     (unsigned long long)want);
		expect_rc(tr_future_poll(fs[idx]), TR_OK, "poll");
		cr_assert_eq(reply_val(fs[idx]), want + 1000);
		tr_future_destroy(&fs[idx]);
		cr_assert_null(fs[idx]);
	}
	cr_assert_eq(s.release_rc, TR_OK);
	expect_rc(tr_future_wait_any(fs, N, 0, &idx), TR_EINVAL, "wait_any, all NULL");
	sys_finish(&sys);
}

/* wait_any over futures of two systems. */
Test(future, wait_any_across_systems)
{
	tr_system *a = sys_start(1), *b = sys_start(1);
	struct server sa, sb;
	tr_ref ra, rb;
	tr_future *fs[2];
	size_t idx = 9;
	uint64_t v = 1;

	server_init(&sa, S_HOLD, 1);
	server_init(&sb, S_HOLD, 1);
	ra = spawn_server(a, &sa);
	rb = spawn_server(b, &sb);
	fs[0] = ask(ra, 0, LONG_NS);
	fs[1] = ask(rb, 1, LONG_NS);
	cr_assert(tr_test_latch_wait(&sb.got_req, WAIT_S));
	send_ok(rb, T_RELEASE, &v, sizeof(v));
	expect_rc(tr_future_wait_any(fs, 2, WAIT_NS, &idx), TR_OK, "wait_any");
	cr_assert_eq(idx, 1);
	tr_future_destroy(&fs[1]);
	v = 0;
	send_ok(ra, T_RELEASE, &v, sizeof(v));
	expect_rc(tr_future_wait_any(fs, 2, WAIT_NS, &idx), TR_OK, "wait_any");
	cr_assert_eq(idx, 0);
	tr_future_destroy(&fs[0]);
	sys_finish(&b);
	sys_finish(&a);
}

/* ------------------------------------------------------------ destroying */

Test(future, destroy_while_pending_then_reply_arrives)
{
	tr_system *sys = sys_start(2);
	struct server s, q;
	tr_ref srv;
	tr_future *f, *g;
	uint64_t v = 1;

	server_init(&s, S_HOLD, 1);
	srv = spawn_server(sys, &s);
	f = ask(srv, 1, LONG_NS);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	tr_future_destroy(&f);
	cr_assert_null(f);
	send_ok(srv, T_RELEASE, &v, sizeof(v)); /* the answer to a destroyed future */
	flush(srv);

	/* and one whose timeout fires after it was destroyed */
	server_init(&q, S_SILENT, 1);
	g = ask(spawn_server(sys, &q), 1, 10 * MS);
	tr_future_destroy(&g);
	sleep_ms(50);

	/* the runtime still works */
	f = ask(srv, 2, 10 * MS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_ETIMEDOUT, "wait");
	tr_future_destroy(&f);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ pointers */

Test(future, reply_ptr_owned_by_future)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_ref srv;
	tr_future *f;
	tr_msg *m;
	uint64_t *p;

	atomic_store(&dtor_calls, 0);
	server_init(&s, S_REPLY_PTR, 2);
	srv = spawn_server(sys, &s);
	/* not taken: destroyed with the future */
	f = ask(srv, 5, LONG_NS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	m = tr_future_reply(f);
	cr_assert_not_null(m);
	cr_assert_null(tr_msg_data(m));
	cr_assert_not_null(tr_msg_ptr(m));
	cr_assert_eq(*(uint64_t *)tr_msg_ptr(m), 1005);
	cr_assert_eq(atomic_load(&dtor_calls), 0);
	tr_future_destroy(&f);
	cr_assert_eq(atomic_load(&dtor_calls), 1, "untaken pointer reply destroyed %d times",
		     atomic_load(&dtor_calls));
	/* taken: ours */
	f = ask(srv, 6, LONG_NS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	p = tr_msg_take(tr_future_reply(f));
	cr_assert_not_null(p);
	cr_assert_eq(*p, 1006);
	tr_future_destroy(&f);
	cr_assert_eq(atomic_load(&dtor_calls), 1);
	free(p);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ threads */

#define TH_N 4
#define TH_PER 200

struct asker_thread {
	tr_ref *srv;
	unsigned id;
	int bad;
	int first_bad_rc;
};

static void *asker_main(void *arg)
{
	struct asker_thread *a = arg;
	tr_future *fs[TH_PER];

	for (uint64_t i = 0; i < TH_PER; i++) {
		uint64_t v = a->id * 100000u + i;

		fs[i] = NULL;
		if (tr_ask_future(a->srv[i % 2], T_REQ, &v, sizeof(v), LONG_NS, &fs[i]) != TR_OK)
			a->bad++;
	}
	if (tr_future_wait_all(fs, TH_PER, WAIT_NS) != TR_OK)
		a->bad++;
	for (uint64_t i = 0; i < TH_PER; i++) {
		tr_msg *m;
		uint64_t v = 0;
		int rc;

		if (!fs[i])
			continue;
		rc = tr_future_poll(fs[i]);
		m = tr_future_reply(fs[i]);
		if (m && tr_msg_size(m) == sizeof(v))
			memcpy(&v, tr_msg_data(m), sizeof(v));
		if (rc != TR_OK || v != a->id * 100000u + i + 1000) {
			if (a->bad++ == 0)
				a->first_bad_rc = rc;
		}
		tr_future_destroy(&fs[i]);
	}
	return NULL;
}

Test(future, many_threads_many_futures)
{
	tr_system *sys = sys_start(2);
	struct server s[2];
	tr_ref srv[2];
	struct asker_thread a[TH_N];
	pthread_t th[TH_N];

	for (int i = 0; i < 2; i++) {
		server_init(&s[i], S_ECHO, 0);
		srv[i] = spawn_server(sys, &s[i]);
	}
	for (unsigned i = 0; i < TH_N; i++) {
		a[i] = (struct asker_thread){ .srv = srv, .id = i };
		cr_assert_eq(pthread_create(&th[i], NULL, asker_main, &a[i]), 0);
	}
	for (unsigned i = 0; i < TH_N; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < TH_N; i++)
		cr_assert_eq(a[i].bad, 0, "thread %u: %d bad outcomes (first %s)", i, a[i].bad,
			     tr_err_name(a[i].first_bad_rc));
	sys_finish(&sys);
}

/* ------------------------------------------------------------ life cycle */

/* A request pending when its system shuts down completes (receiver down or
 * shut down) instead of leaving its waiter hanging. */
Test(future, pending_at_shutdown_completes)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_future *f;
	int rc;

	server_init(&s, S_SILENT, 1);
	f = ask(spawn_server(sys, &s), 1, LONG_NS);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	rc = tr_future_wait(f, WAIT_NS);
	cr_assert(rc == TR_ESHUTDOWN || rc == TR_EDEAD, "pending at shutdown: %s",
		  tr_err_name(rc));
	tr_future_destroy(&f);
	tr_system_destroy(&sys);
}

/* "Owned by the future: valid until tr_future_destroy": a reply read after
 * its system was destroyed, and the future destroyed last (ASan). */
/* Futures live in their system (ask.h): they outlive its shutdown, with
 * their outcome and reply intact, and are destroyed before it is. */
Test(future, future_outlives_its_systems_shutdown)
{
	tr_system *sys = sys_start(2);
	struct server s;
	tr_future *f;

	server_init(&s, S_ECHO, 1);
	f = ask(spawn_server(sys, &s), 9, LONG_NS);
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	expect_rc(tr_future_poll(f), TR_OK, "poll after shutdown");
	cr_assert_eq(reply_val(f), 1009);
	tr_future_destroy(&f);
	cr_assert_null(f);
	sys_finish(&sys);
}

/* ------------------------------------------------------------ errors */

Test(future, errors)
{
	tr_system *sys = sys_new_cfg(1, 0);
	struct server s;
	tr_ref srv;
	tr_future *f = NULL, *fs[2] = { NULL, NULL };
	char big[TR_MSG_INLINE_MAX + 1] = { 0 };
	uint64_t v = 1;
	size_t idx;
	struct cb c;

	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	expect_rc(tr_ask_future(srv, T_REQ, &v, sizeof(v), LONG_NS, &f), TR_ENOTSTARTED,
		  "before start");
	cr_assert_eq(tr_system_start(sys), TR_OK);
	expect_rc(tr_ask_future(TR_REF_NONE, T_REQ, &v, sizeof(v), LONG_NS, &f), TR_EINVAL, "NONE");
	expect_rc(tr_ask_future(srv, T_REQ, &v, sizeof(v), LONG_NS, NULL), TR_EINVAL, "out NULL");
	expect_rc(tr_ask_future(srv, T_REQ, NULL, 4, LONG_NS, &f), TR_EINVAL, "NULL data");
	expect_rc(tr_ask_future(srv, TR_MSG_TYPE_RUNTIME, &v, sizeof(v), LONG_NS, &f), TR_EINVAL,
		  "reserved type");
	expect_rc(tr_ask_future(srv, T_REQ, big, sizeof(big), LONG_NS, &f), TR_E2BIG, "too big");
	expect_rc(tr_future_wait_any(fs, 2, 0, &idx), TR_EINVAL, "wait_any of NULLs");
	expect_rc(tr_future_wait_any(fs, 0, 0, &idx), TR_EINVAL, "wait_any of none");
	cb_init(&c);
	expect_rc(tr_future_then(NULL, cb_fn, &c), TR_EINVAL, "then(NULL)");
	f = ask(srv, 1, LONG_NS);
	expect_rc(tr_future_then(f, NULL, NULL), TR_EINVAL, "then without fn");
	expect_rc(tr_future_wait(f, WAIT_NS), TR_OK, "wait");
	tr_future_destroy(&f);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	expect_rc(tr_ask_future(srv, T_REQ, &v, sizeof(v), LONG_NS, &f), TR_ESHUTDOWN,
		  "after shutdown");
	tr_system_destroy(&sys);
	cr_assert_eq(atomic_load(&c.calls), 0);
}
