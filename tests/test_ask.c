/*
 * Unit tests for tr_ask / tr_ask_ptr / tr_reply* (troupe/ask.h): the
 * continuation and what it sees, every outcome (reply, receiver down,
 * timeout), replies racing timeouts and late replies, askers that stop with
 * requests pending, deferred replies, pointer payload ownership and the
 * error paths.
 *
 * Continuations and behaviours record what they saw in their actor's state;
 * the test thread reads it after a latch. Request timeouts that must not
 * fire are made much longer than any wait, so an outcome that comes by
 * timeout instead of the expected one shows as a wrong status or a hang the
 * latch catches.
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
#define LONG_NS (120000 * MS) /* a timeout that never fires in a test */

TestSuite(ask, .timeout = 120);

enum {
	T_REQ = 0x400,
	T_REP,
	T_GO,
	T_FLUSH,
	T_BLOCK,
	T_PLAIN,
	T_LATE,
	T_FWD,
	T_DIE,
	T_ANSWER,
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
	cr_assert_not_null(sys);
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

static void flush_beh(tr_msg *m)
{
	void *p;

	memcpy(&p, tr_msg_data(m), sizeof(p));
	tr_test_latch_count_down(p);
}

/* Returns once `to` handled everything this thread sent it before. */
static void flush(tr_ref to)
{
	tr_test_latch l;
	tr_test_latch *p = &l;

	tr_test_latch_init(&l, 1);
	send_ok(to, T_FLUSH, &p, sizeof(p));
	cr_assert(tr_test_latch_wait(&l, WAIT_S), "flush never arrived");
	tr_test_latch_destroy(&l);
}

/* ---- pointer payloads ---- */

static atomic_int dtor_calls;

static void counting_dtor(void *p)
{
	atomic_fetch_add(&dtor_calls, 1);
	free(p);
}

static void *payload_new(uint64_t v)
{
	uint64_t *p = malloc(sizeof(*p));

	cr_assert_not_null(p);
	*p = v;
	return p;
}

/* ---- server: answers requests according to its mode ---- */

enum server_mode {
	S_ECHO,       /* reply val + 1000 at once */
	S_KEEP,       /* keep the reply address, answer nothing */
	S_FAIL,       /* fail (return 42) without answering */
	S_STOP,       /* tr_stop_self(TR_OK) without answering */
	S_FWD,        /* pass the reply address to `helper` */
	S_TWICE,      /* reply twice */
	S_BADREPLY,   /* try bad replies, then a good one */
	S_PTR_TAKE,   /* take the pointer payload, reply val of it + 1000 */
	S_REPLY_PTR,  /* reply with a pointer payload */
	S_LATE,       /* answer after a timer of `late_ns[val]` */
	S_REPLY_FAIL, /* tr_reply, then fail (return 42) */
	S_REPLYTO_FAIL, /* tr_reply_to(tr_msg_reply_to()), then fail */
	S_KEEP0_REPLYTO, /* keep request 0, answer the others with tr_reply_to */
};

#define MAXKEEP (TR_OPEN_REQUESTS_MAX + 64)

struct server {
	int mode;
	tr_ref helper;
	atomic_uint requests;       /* requests handled */
	atomic_uint plain;          /* plain messages handled */
	/* the last request seen */
	bool was_request;
	uint16_t req_flags;
	uint64_t req_corr;
	tr_ref req_sender;
	uint64_t req_val;
	tr_reply_addr req_rt;
	/* plain message checks */
	bool plain_is_request;
	tr_reply_addr plain_rt;
	int plain_reply_rc;
	/* reply results */
	int reply_rc[8];
	atomic_uint replies_ok;
	tr_reply_addr kept[MAXKEEP];
	atomic_uint nkept;
	uint64_t *late_ns;          /* S_LATE: delay per request val */
	atomic_uint late_done;
	/* blocking and life cycle */
	bool stop_after_block;
	tr_test_latch entered, release;
	tr_test_latch got_req;      /* one count per request */
	tr_test_latch cleaned;
	int reason;
};

struct late {
	tr_reply_addr rt;
	uint64_t val;
};

static void server_init(struct server *s, int mode, uint64_t expect_req)
{
	memset(s, 0, sizeof(*s));
	s->mode = mode;
	s->reason = 12345;
	for (unsigned i = 0; i < 8; i++)
		s->reply_rc[i] = 12345;
	s->plain_reply_rc = 12345;
	tr_test_latch_init(&s->entered, 1);
	tr_test_latch_init(&s->release, 1);
	tr_test_latch_init(&s->got_req, expect_req);
	tr_test_latch_init(&s->cleaned, 1);
}

static int server_request(struct server *s, tr_msg *m)
{
	uint64_t v = 0, r;
	char big[TR_MSG_INLINE_MAX + 1] = { 0 };
	void *p;

	s->was_request = tr_msg_is_request(m);
	s->req_flags = m->flags;
	s->req_corr = m->corr;
	s->req_sender = tr_msg_sender(m);
	s->req_rt = tr_msg_reply_to(m);
	if (tr_msg_data(m) && tr_msg_size(m) >= sizeof(v))
		memcpy(&v, tr_msg_data(m), sizeof(v));
	else if (tr_msg_ptr(m))
		v = *(uint64_t *)tr_msg_ptr(m); /* borrowed, not taken */
	s->req_val = v;
	r = v + 1000;
	switch (s->mode) {
	case S_ECHO:
		s->reply_rc[0] = tr_reply(m, T_REP, &r, sizeof(r));
		break;
	case S_KEEP: {
		unsigned k = atomic_load(&s->nkept);

		if (k < MAXKEEP) {
			s->kept[k] = tr_msg_reply_to(m);
			atomic_store(&s->nkept, k + 1);
		}
		break;
	}
	case S_FAIL:
		return 42;
	case S_STOP:
		tr_stop_self(TR_OK);
		break;
	case S_FWD: {
		tr_reply_addr rt = tr_msg_reply_to(m);

		s->reply_rc[0] = tr_send(s->helper, T_FWD, &rt, sizeof(rt));
		break;
	}
	case S_TWICE:
		s->reply_rc[0] = tr_reply(m, T_REP, &r, sizeof(r));
		r++;
		s->reply_rc[1] = tr_reply(m, T_REP, &r, sizeof(r));
		break;
	case S_BADREPLY:
		s->reply_rc[0] = tr_reply(m, TR_MSG_TYPE_RUNTIME, &r, sizeof(r));
		s->reply_rc[1] = tr_reply(m, TR_MSG_DOWN, &r, sizeof(r));
		s->reply_rc[2] = tr_reply(m, T_REP, NULL, sizeof(r));
		s->reply_rc[3] = tr_reply(m, T_REP, big, sizeof(big));
		s->reply_rc[4] = tr_reply(m, T_REP, &r, sizeof(r));
		break;
	case S_PTR_TAKE:
		p = tr_msg_take(m);
		if (p) {
			r = *(uint64_t *)p + 1000;
			free(p);
		}
		s->reply_rc[0] = tr_reply(m, T_REP, &r, sizeof(r));
		break;
	case S_REPLY_PTR: {
		void *q = payload_new(r);
		tr_reply_addr rt = tr_msg_reply_to(m);

		s->reply_rc[0] = tr_reply_ptr(rt, T_REP, &q, counting_dtor);
		s->reply_rc[1] = q == NULL;
		if (q)
			counting_dtor(q);
		break;
	}
	case S_REPLY_FAIL:
		s->reply_rc[0] = tr_reply(m, T_REP, &r, sizeof(r));
		return 42;
	case S_REPLYTO_FAIL:
		s->reply_rc[0] = tr_reply_to(tr_msg_reply_to(m), T_REP, &r, sizeof(r));
		return 42;
	case S_KEEP0_REPLYTO:
		if (v != 0)
			s->reply_rc[0] = tr_reply_to(tr_msg_reply_to(m), T_REP, &r, sizeof(r));
		break;
	case S_LATE: {
		struct late l = { tr_msg_reply_to(m), v };

		s->reply_rc[0] = tr_send_after(tr_self(), s->late_ns[v], T_LATE, &l, sizeof(l), NULL);
		break;
	}
	}
	return 0;
}

static int server_beh(void *state, tr_msg *m)
{
	struct server *s = state;
	int rc = 0;

	switch (tr_msg_type(m)) {
	case T_FLUSH:
		flush_beh(m);
		return 0;
	case T_BLOCK:
		tr_test_latch_count_down(&s->entered);
		tr_test_latch_wait(&s->release, WAIT_S);
		if (s->stop_after_block)
			tr_stop_self(TR_OK);
		return 0;
	case T_DIE:
		tr_stop_self(TR_OK);
		return 0;
	case T_ANSWER: {
		/* a deferred answer from the server itself: kept[k] */
		uint32_t k;
		uint64_t r = 2000;

		memcpy(&k, tr_msg_data(m), sizeof(k));
		if (k < atomic_load(&s->nkept))
			s->reply_rc[7] = tr_reply_to(s->kept[k], T_REP, &r, sizeof(r));
		if (tr_msg_size(m) >= 8 + sizeof(void *)) {
			tr_test_latch *l;

			memcpy(&l, (const char *)tr_msg_data(m) + 8, sizeof(l));
			tr_test_latch_count_down(l);
		}
		return 0;
	}
	case T_LATE: {
		struct late l;

		memcpy(&l, tr_msg_data(m), sizeof(l));
		l.val += 1000;
		if (tr_reply_to(l.rt, T_REP, &l.val, sizeof(l.val)) == TR_OK)
			atomic_fetch_add(&s->replies_ok, 1);
		atomic_fetch_add(&s->late_done, 1);
		return 0;
	}
	case T_PLAIN: {
		uint64_t r = 1;

		s->plain_is_request = tr_msg_is_request(m);
		s->plain_rt = tr_msg_reply_to(m);
		s->plain_reply_rc = tr_reply(m, T_REP, &r, sizeof(r));
		atomic_fetch_add(&s->plain, 1);
		return 0;
	}
	}
	if (tr_msg_is_request(m) || tr_msg_type(m) == T_REQ) {
		rc = server_request(s, m);
		atomic_fetch_add(&s->requests, 1);
		tr_test_latch_count_down(&s->got_req);
	}
	return rc;
}

static void server_cleanup(void *state, int reason)
{
	struct server *s = state;

	s->reason = reason;
	tr_test_latch_count_down(&s->cleaned);
}

static tr_ref spawn_server(tr_system *sys, struct server *s)
{
	tr_actor_opts o = { .behaviour = server_beh, .state = s, .cleanup = server_cleanup };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

/* ---- client: asks on T_GO, records what its continuation sees ---- */

struct call {
	atomic_int calls;
	int status;
	uint64_t t_ask, t_done;
	bool reply_null;
	uint32_t reply_type;
	uint16_t reply_flags;
	uint64_t reply_corr;
	uint64_t reply_val;
	size_t reply_size;
	bool reply_ptr;
	void *state_seen;
	tr_ref self_seen;
	int ret;             /* what the continuation returns */
	tr_test_latch done;
};

struct client {
	tr_ref target;
	uint64_t timeout_ns;
	uint64_t val;
	int ask_rc;
	bool stop_after_ask; /* tr_stop_self right after asking */
	bool use_ptr;
	void *ptr;           /* tr_ask_ptr payload; NULL after a successful ask */
	bool take_reply;     /* continuation takes a pointer reply */
	struct call c;
	atomic_int calls_after_cleanup;
	atomic_bool cleaned_flag;
	tr_test_latch asked;
	tr_test_latch cleaned;
	int reason;
};

static void call_init(struct call *c)
{
	memset(c, 0, sizeof(*c));
	c->status = 12345;
	tr_test_latch_init(&c->done, 1);
}

static void client_init(struct client *cl, tr_ref target, uint64_t timeout_ns, uint64_t val)
{
	memset(cl, 0, sizeof(*cl));
	cl->target = target;
	cl->timeout_ns = timeout_ns;
	cl->val = val;
	cl->ask_rc = 12345;
	cl->reason = 12345;
	call_init(&cl->c);
	tr_test_latch_init(&cl->asked, 1);
	tr_test_latch_init(&cl->cleaned, 1);
}

static int on_reply(void *state, void *ctx, int status, tr_msg *reply)
{
	struct client *cl = state;
	struct call *c = ctx;

	c->t_done = now_ns();
	c->status = status;
	c->state_seen = state;
	c->self_seen = tr_self();
	c->reply_null = reply == NULL;
	if (reply) {
		c->reply_type = tr_msg_type(reply);
		c->reply_flags = reply->flags;
		c->reply_corr = reply->corr;
		c->reply_size = tr_msg_size(reply);
		c->reply_ptr = tr_msg_data(reply) == NULL;
		if (!c->reply_ptr && c->reply_size >= sizeof(c->reply_val))
			memcpy(&c->reply_val, tr_msg_data(reply), sizeof(c->reply_val));
		if (c->reply_ptr && tr_msg_ptr(reply)) {
			c->reply_val = *(uint64_t *)tr_msg_ptr(reply);
			if (cl->take_reply)
				free(tr_msg_take(reply));
		}
	}
	if (atomic_load(&cl->cleaned_flag))
		atomic_fetch_add(&cl->calls_after_cleanup, 1);
	atomic_fetch_add(&c->calls, 1);
	tr_test_latch_count_down(&c->done);
	return c->ret;
}

static int client_beh(void *state, tr_msg *m)
{
	struct client *cl = state;

	switch (tr_msg_type(m)) {
	case T_GO:
		cl->c.t_ask = now_ns();
		if (cl->use_ptr)
			cl->ask_rc = tr_ask_ptr(cl->target, T_REQ, &cl->ptr, counting_dtor,
						cl->timeout_ns, on_reply, &cl->c);
		else
			cl->ask_rc = tr_ask(cl->target, T_REQ, &cl->val, sizeof(cl->val),
					    cl->timeout_ns, on_reply, &cl->c);
		if (cl->stop_after_ask)
			tr_stop_self(TR_OK);
		tr_test_latch_count_down(&cl->asked);
		break;
	case T_FLUSH:
		flush_beh(m);
		break;
	}
	return 0;
}

static void client_cleanup(void *state, int reason)
{
	struct client *cl = state;

	cl->reason = reason;
	atomic_store(&cl->cleaned_flag, true);
	tr_test_latch_count_down(&cl->cleaned);
}

static tr_ref spawn_client(tr_system *sys, struct client *cl)
{
	tr_actor_opts o = { .behaviour = client_beh, .state = cl, .cleanup = client_cleanup };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

/* Asks once and waits for the continuation. */
static void ask_and_wait(tr_ref client, struct client *cl)
{
	send_ok(client, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&cl->asked, WAIT_S), "client never asked");
	cr_assert_eq(cl->ask_rc, TR_OK, "tr_ask: %s", tr_err_name(cl->ask_rc));
	cr_assert(tr_test_latch_wait(&cl->c.done, WAIT_S), "continuation never ran");
}

static void expect_status(const struct call *c, int want)
{
	cr_assert_eq(c->status, want, "continuation got %s, want %s", tr_err_name(c->status),
		     tr_err_name(want));
}

/* ------------------------------------------------------------- replies */

Test(ask, reply_runs_continuation_in_asker)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;

	server_init(&s, S_ECHO, 1);
	srv = spawn_server(sys, &s);
	client_init(&cl, srv, LONG_NS, 7);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	flush(me);

	expect_status(&cl.c, TR_OK);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	cr_assert_not(cl.c.reply_null);
	cr_assert_eq(cl.c.reply_type, T_REP);
	cr_assert_eq(cl.c.reply_size, sizeof(uint64_t));
	cr_assert_eq(cl.c.reply_val, 1007);
	cr_assert_eq(cl.c.state_seen, &cl, "continuation got another state");
	cr_assert(tr_ref_eq(cl.c.self_seen, me), "tr_self() in the continuation is not the asker");
	cr_assert(cl.c.reply_flags & TR_MSG_F_REPLY, "reply without TR_MSG_F_REPLY");
	cr_assert_eq(cl.c.reply_corr, s.req_corr, "reply corr differs from the request's");
	cr_assert_eq(s.reply_rc[0], TR_OK);
	/* what the server saw */
	cr_assert(s.was_request);
	cr_assert(s.req_flags & TR_MSG_F_REQUEST);
	cr_assert_neq(s.req_corr, 0);
	cr_assert_eq(s.req_val, 7);
	cr_assert_eq(s.req_rt.to, me.id, "reply_to.to is not the asking actor");
	cr_assert_eq(s.req_rt.corr, s.req_corr);
	sys_finish(&sys);
}

/* Ask an actor that asks back: continuations chain, and an actor can ask
 * itself. */
struct selfask {
	int rc1, rc2;
	int st1, st2;
	uint64_t v2;
	tr_test_latch done;
};

static int selfask_second(void *state, void *ctx, int status, tr_msg *reply)
{
	struct selfask *a = state;

	(void)ctx;
	a->st2 = status;
	if (reply && tr_msg_size(reply) == sizeof(a->v2))
		memcpy(&a->v2, tr_msg_data(reply), sizeof(a->v2));
	tr_test_latch_count_down(&a->done);
	return 0;
}

static int selfask_first(void *state, void *ctx, int status, tr_msg *reply)
{
	struct selfask *a = state;
	uint64_t v = 2;

	(void)ctx;
	(void)reply;
	a->st1 = status;
	/* ask again from inside a continuation */
	a->rc2 = tr_ask(tr_self(), T_REQ, &v, sizeof(v), LONG_NS, selfask_second, NULL);
	if (a->rc2 != TR_OK)
		tr_test_latch_count_down(&a->done);
	return 0;
}

static int selfask_beh(void *state, tr_msg *m)
{
	struct selfask *a = state;
	uint64_t v = 1;

	if (tr_msg_type(m) == T_GO) {
		a->rc1 = tr_ask(tr_self(), T_REQ, &v, sizeof(v), LONG_NS, selfask_first, NULL);
		if (a->rc1 != TR_OK)
			tr_test_latch_count_down(&a->done);
	} else if (tr_msg_is_request(m)) {
		memcpy(&v, tr_msg_data(m), sizeof(v));
		v *= 10;
		tr_reply(m, T_REP, &v, sizeof(v));
	}
	return 0;
}

Test(ask, self_ask_and_ask_from_continuation)
{
	tr_system *sys = sys_start(1);
	struct selfask a = { .st1 = 12345, .st2 = 12345 };
	tr_ref r;

	tr_test_latch_init(&a.done, 1);
	cr_assert_eq(tr_spawn(sys, selfask_beh, &a, &r), TR_OK);
	send_ok(r, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&a.done, WAIT_S));
	cr_assert_eq(a.rc1, TR_OK);
	cr_assert_eq(a.rc2, TR_OK);
	cr_assert_eq(a.st1, TR_OK, "%s", tr_err_name(a.st1));
	cr_assert_eq(a.st2, TR_OK, "%s", tr_err_name(a.st2));
	cr_assert_eq(a.v2, 20);
	sys_finish(&sys);
}

/* tr_ask from an init hook. */
struct initask {
	tr_ref srv;
	int rc;
	int st;
	uint64_t v;
	tr_test_latch done;
};

static int initask_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct initask *a = state;

	(void)ctx;
	a->st = status;
	if (reply && tr_msg_size(reply) == sizeof(a->v))
		memcpy(&a->v, tr_msg_data(reply), sizeof(a->v));
	tr_test_latch_count_down(&a->done);
	return 0;
}

static int initask_init(void *state)
{
	struct initask *a = state;
	uint64_t v = 5;

	a->rc = tr_ask(a->srv, T_REQ, &v, sizeof(v), LONG_NS, initask_cont, NULL);
	return 0;
}

static int initask_beh(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

Test(ask, ask_from_init_hook)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct initask a = { .rc = 12345, .st = 12345 };
	tr_actor_opts o = { .behaviour = initask_beh, .state = &a, .init = initask_init };
	tr_ref r;

	server_init(&s, S_ECHO, 1);
	a.srv = spawn_server(sys, &s);
	tr_test_latch_init(&a.done, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	cr_assert_eq(a.rc, TR_OK, "tr_ask in init: %s", tr_err_name(a.rc));
	cr_assert(tr_test_latch_wait(&a.done, WAIT_S));
	cr_assert_eq(a.st, TR_OK);
	cr_assert_eq(a.v, 1005);
	sys_finish(&sys);
}

/* A continuation's non-zero return fails the asker like a behaviour's. */
Test(ask, continuation_failure_stops_asker)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;

	server_init(&s, S_ECHO, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	cl.c.ret = 33;
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	cr_assert(tr_test_latch_wait(&cl.cleaned, WAIT_S), "asker did not stop");
	cr_assert_eq(cl.reason, 33, "cleanup reason %d", cl.reason);
	sys_finish(&sys);
}

/* ------------------------------------------------------- receiver down */

Test(ask, dead_target_is_edead)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;

	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	cr_assert_eq(tr_stop(srv), TR_OK);
	cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	client_init(&cl, srv, LONG_NS, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	flush(me);
	expect_status(&cl.c, TR_EDEAD);
	cr_assert(cl.c.reply_null);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	cr_assert(tr_ref_eq(cl.c.self_seen, me));
	sys_finish(&sys);
}

/* The request sits in the server's mailbox behind a message that keeps the
 * server busy; the server then stops (itself, or killed) without handling
 * it: the asker learns TR_EDEAD. */
static void queued_request_then_stop(bool kill)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;

	server_init(&s, S_ECHO, 0);
	s.stop_after_block = !kill;
	srv = spawn_server(sys, &s);
	send_ok(srv, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.entered, WAIT_S));
	client_init(&cl, srv, LONG_NS, 1);
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&cl.asked, WAIT_S));
	cr_assert_eq(cl.ask_rc, TR_OK);
	if (kill)
		cr_assert_eq(tr_kill(srv), TR_OK);
	tr_test_latch_count_down(&s.release);
	cr_assert(tr_test_latch_wait(&cl.c.done, WAIT_S), "continuation never ran");
	cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	expect_status(&cl.c, TR_EDEAD);
	cr_assert(cl.c.reply_null);
	cr_assert_eq(atomic_load(&s.requests), 0, "server handled the request");
	cr_assert_eq(s.reason, kill ? TR_EKILLED : TR_OK);
	flush(me);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	sys_finish(&sys);
}

Test(ask, target_stops_with_request_queued)
{
	queued_request_then_stop(false);
}

Test(ask, target_killed_with_request_queued)
{
	queued_request_then_stop(true);
}

static void stops_while_handling(int mode, int want_reason)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;

	server_init(&s, mode, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	expect_status(&cl.c, TR_EDEAD);
	cr_assert(cl.c.reply_null);
	cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	cr_assert_eq(s.reason, want_reason);
	flush(me);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	sys_finish(&sys);
}

Test(ask, target_fails_while_handling)
{
	stops_while_handling(S_FAIL, 42);
}

Test(ask, target_stops_while_handling)
{
	stops_while_handling(S_STOP, TR_OK);
}

/* A server that answers and then fails in the same behaviour: the answer
 * came first, the asker gets it. */
static void reply_then_fail(int mode)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;

	server_init(&s, mode, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 6);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	cr_assert_eq(s.reason, 42);
	cr_assert_eq(s.reply_rc[0], TR_OK);
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_val, 1006);
	flush(me);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	sys_finish(&sys);
}

Test(ask, reply_then_fail_is_ok)
{
	reply_then_fail(S_REPLY_FAIL);
}

Test(ask, reply_to_then_fail_is_ok)
{
	reply_then_fail(S_REPLYTO_FAIL);
}

/* Asker and server in two systems. */
Test(ask, across_systems)
{
	tr_system *a = sys_start(1), *b = sys_start(1);
	struct server s, k;
	struct client cl, cl2;
	tr_ref me, me2;

	server_init(&s, S_ECHO, 1);
	client_init(&cl, spawn_server(b, &s), LONG_NS, 11);
	me = spawn_client(a, &cl);
	ask_and_wait(me, &cl);
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_val, 1011);
	/* and a timeout kept by the asker's system */
	server_init(&k, S_KEEP, 1);
	client_init(&cl2, spawn_server(b, &k), 20 * MS, 12);
	me2 = spawn_client(a, &cl2);
	ask_and_wait(me2, &cl2);
	expect_status(&cl2.c, TR_ETIMEDOUT);
	sys_finish(&b);
	sys_finish(&a);
}

/* The server handled the request, kept its reply address and stopped
 * later without answering: "stopped before answering" is TR_EDEAD. */
Test(ask, target_stops_later_without_answering)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;

	server_init(&s, S_KEEP, 1);
	srv = spawn_server(sys, &s);
	/* a timeout well inside the latch wait: a runtime that never learns
	 * "receiver down" shows TR_ETIMEDOUT instead of hanging the test */
	client_init(&cl, srv, 10000 * MS, 1);
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(tr_stop(srv), TR_OK);
	cr_assert(tr_test_latch_wait(&cl.c.done, WAIT_S), "continuation never ran");
	expect_status(&cl.c, TR_EDEAD);
	sys_finish(&sys);
}

/*
 * A server remembers up to TR_OPEN_REQUESTS_MAX requests it has not
 * answered: when it stops, their askers learn TR_EDEAD; requests older than
 * those time out. A bulk asker sends requests 0..n-1 in order; each
 * outcome lands in status[i].
 */
#define BULK_MAX (TR_OPEN_REQUESTS_MAX + 16)
#define BULK_TIMEOUT (5000 * MS)

struct bulk {
	tr_ref srv;
	uint32_t next;
	int status[BULK_MAX];
	atomic_int calls[BULK_MAX];
	int ask_err;
	tr_test_latch asked;   /* one count per T_GO handled */
	tr_test_latch done;    /* one count per outcome */
};

static int bulk_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct bulk *b = state;
	uint32_t i = (uint32_t)(uintptr_t)ctx;

	(void)reply;
	b->status[i] = status;
	atomic_fetch_add(&b->calls[i], 1);
	tr_test_latch_count_down(&b->done);
	return 0;
}

static int bulk_beh(void *state, tr_msg *m)
{
	struct bulk *b = state;
	uint32_t n;

	if (tr_msg_type(m) != T_GO)
		return 0;
	memcpy(&n, tr_msg_data(m), sizeof(n));
	for (; n > 0 && b->next < BULK_MAX; n--, b->next++) {
		uint64_t v = b->next;

		if (tr_ask(b->srv, T_REQ, &v, sizeof(v), BULK_TIMEOUT, bulk_cont,
			   (void *)(uintptr_t)b->next) != TR_OK)
			b->ask_err++;
	}
	tr_test_latch_count_down(&b->asked);
	return 0;
}

static void bulk_ask(tr_ref me, struct bulk *b, uint32_t n)
{
	tr_test_latch_init(&b->asked, 1);
	send_ok(me, T_GO, &n, sizeof(n));
	cr_assert(tr_test_latch_wait(&b->asked, WAIT_S));
	tr_test_latch_destroy(&b->asked);
}

static void check_open_requests(bool answer_first)
{
	enum { EXTRA = 6 };
	uint32_t total = TR_OPEN_REQUESTS_MAX + EXTRA + (answer_first ? 1 : 0);
	tr_system *sys = sys_start(2);
	struct server s;
	struct bulk *b = calloc(1, sizeof(*b));
	tr_ref me;
	uint32_t oldest_kept;

	cr_assert_not_null(b);
	server_init(&s, S_KEEP, total);
	b->srv = spawn_server(sys, &s);
	tr_test_latch_init(&b->done, total);
	cr_assert_eq(tr_spawn(sys, bulk_beh, b, &me), TR_OK);
	if (answer_first) {
		/* fill the server's memory, answer the oldest one itself, then
		 * go over the limit: the oldest still unanswered must go */
		tr_test_latch l;
		struct {
			uint32_t k;
			uint32_t pad;
			tr_test_latch *l;
		} a = { 0, 0, &l };

		bulk_ask(me, b, TR_OPEN_REQUESTS_MAX);
		for (uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;
		     atomic_load(&s.nkept) < TR_OPEN_REQUESTS_MAX && now_ns() < end;)
			sleep_ms(1);
		tr_test_latch_init(&l, 1);
		send_ok(b->srv, T_ANSWER, &a, sizeof(a));
		cr_assert(tr_test_latch_wait(&l, WAIT_S));
		cr_assert_eq(s.reply_rc[7], TR_OK);
		bulk_ask(me, b, EXTRA + 1);
	} else {
		bulk_ask(me, b, total);
	}
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(tr_stop(b->srv), TR_OK);
	cr_assert(tr_test_latch_wait(&b->done, WAIT_S), "outcomes missing");
	cr_assert_eq(b->ask_err, 0);
	oldest_kept = total - TR_OPEN_REQUESTS_MAX;
	for (uint32_t i = 0; i < total; i++) {
		int want = i < oldest_kept ? TR_ETIMEDOUT : TR_EDEAD;

		if (answer_first && i == 0)
			want = TR_OK; /* answered before the others came */
		cr_assert_eq(atomic_load(&b->calls[i]), 1);
		cr_expect_eq(b->status[i], want, "request %u of %u: %s, want %s (the server "
			     "remembers the newest %u unanswered)", i, total,
			     tr_err_name(b->status[i]), tr_err_name(want), TR_OPEN_REQUESTS_MAX);
	}
	sys_finish(&sys);
	free(b);
}

Test(ask, server_remembers_newest_open_requests)
{
	check_open_requests(false);
}

Test(ask, open_requests_forget_the_oldest_after_an_answer)
{
	check_open_requests(true);
}

/*
 * Requests answered inside the behaviour with tr_reply_to(tr_msg_reply_to())
 * (rather than tr_reply) are answered: they must not take the place of a
 * request the server really keeps open. Request 0 is kept, the next
 * TR_OPEN_REQUESTS_MAX + 16 are answered at once; when the server stops,
 * request 0's asker must learn TR_EDEAD.
 */
Test(ask, answered_requests_do_not_crowd_out_open_ones)
{
	uint32_t total = BULK_MAX;
	tr_system *sys = sys_start(2);
	struct server s;
	struct bulk *b = calloc(1, sizeof(*b));
	tr_ref me;

	cr_assert_not_null(b);
	server_init(&s, S_KEEP0_REPLYTO, total);
	b->srv = spawn_server(sys, &s);
	tr_test_latch_init(&b->done, total);
	cr_assert_eq(tr_spawn(sys, bulk_beh, b, &me), TR_OK);
	bulk_ask(me, b, total);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(tr_stop(b->srv), TR_OK);
	cr_assert(tr_test_latch_wait(&b->done, WAIT_S), "outcomes missing");
	for (uint32_t i = 1; i < total; i++)
		cr_assert_eq(b->status[i], TR_OK, "request %u: %s", i, tr_err_name(b->status[i]));
	cr_assert_eq(b->status[0], TR_EDEAD, "the one open request: %s, want TR_EDEAD",
		     tr_err_name(b->status[0]));
	sys_finish(&sys);
	free(b);
}

/* ------------------------------------------------------------- timeouts */

Test(ask, no_reply_times_out_not_before_timeout)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;
	tr_stats st;
	uint64_t v = 1;

	server_init(&s, S_KEEP, 1);
	client_init(&cl, spawn_server(sys, &s), 50 * MS, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	expect_status(&cl.c, TR_ETIMEDOUT);
	cr_assert(cl.c.reply_null);
	cr_assert_geq(cl.c.t_done - cl.c.t_ask, 50 * MS, "timed out after %.3f ms",
		      (double)(cl.c.t_done - cl.c.t_ask) / 1e6);
	/* the reply comes after all: discarded and counted late */
	cr_assert_eq(atomic_load(&s.nkept), 1);
	cr_assert_eq(tr_reply_to(s.kept[0], T_REP, &v, sizeof(v)), TR_OK);
	flush(me);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	st = sys_finish(&sys);
	cr_assert_eq(st.late_replies, 1);
}

Test(ask, default_timeout_from_config)
{
	tr_system *sys = sys_new_cfg(2, 100);
	struct server s;
	struct client cl;
	tr_ref me;

	cr_assert_eq(tr_system_start(sys), TR_OK);
	server_init(&s, S_KEEP, 1);
	client_init(&cl, spawn_server(sys, &s), 0, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	expect_status(&cl.c, TR_ETIMEDOUT);
	cr_assert_geq(cl.c.t_done - cl.c.t_ask, 100 * MS, "timed out after %.3f ms",
		      (double)(cl.c.t_done - cl.c.t_ask) / 1e6);
	sys_finish(&sys);
}

/* A timeout of ~584 years (UINT64_MAX: "practically never") must not wrap
 * into the past and expire at once. */
Test(ask, huge_timeout_does_not_expire)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;
	uint64_t v = 3;

	server_init(&s, S_KEEP, 1);
	srv = spawn_server(sys, &s);
	client_init(&cl, srv, UINT64_MAX, 1);
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	sleep_ms(50);
	flush(me);
	cr_assert_eq(atomic_load(&cl.c.calls), 0, "request with timeout UINT64_MAX ended "
		     "with %s", tr_err_name(cl.c.status));
	cr_assert_eq(tr_reply_to(s.kept[0], T_REP, &v, sizeof(v)), TR_OK);
	cr_assert(tr_test_latch_wait(&cl.c.done, WAIT_S));
	expect_status(&cl.c, TR_OK);
	sys_finish(&sys);
}

/* Answering twice: the asker keeps the first answer, the second is late. */
Test(ask, second_reply_is_late)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;
	tr_stats st;

	server_init(&s, S_TWICE, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	flush(me);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	flush(me);
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_val, 1001, "asker kept the second answer");
	cr_assert_eq(s.reply_rc[0], TR_OK);
	cr_assert_eq(s.reply_rc[1], TR_OK);
	cr_assert_eq(atomic_load(&cl.c.calls), 1);
	st = sys_finish(&sys);
	cr_assert_eq(st.late_replies, 1);
}

/*
 * Replies racing their timeouts: the server answers each request after a
 * delay spread around the request's timeout. Each request ends exactly
 * once, with its own reply or TR_ETIMEDOUT, never early; every reply that
 * did not decide its request is a late reply.
 */
#define RACE_N 256
#define RACE_TIMEOUT (5 * MS)

struct racer {
	tr_ref srv;
	struct call c[RACE_N];
	uint64_t t_ask[RACE_N];
	int rc[RACE_N];
	atomic_uint outcomes;
	tr_test_latch done;
};

static int racer_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct racer *r = state;
	struct call *c = ctx;
	size_t i = (size_t)(c - r->c);

	c->t_done = now_ns();
	c->t_ask = r->t_ask[i];
	c->status = status;
	c->reply_null = reply == NULL;
	if (reply && tr_msg_size(reply) == sizeof(c->reply_val))
		memcpy(&c->reply_val, tr_msg_data(reply), sizeof(c->reply_val));
	atomic_fetch_add(&c->calls, 1);
	atomic_fetch_add(&r->outcomes, 1);
	tr_test_latch_count_down(&r->done);
	return 0;
}

static int racer_beh(void *state, tr_msg *m)
{
	struct racer *r = state;

	if (tr_msg_type(m) == T_GO) {
		for (uint64_t i = 0; i < RACE_N; i++) {
			r->t_ask[i] = now_ns();
			r->rc[i] = tr_ask(r->srv, T_REQ, &i, sizeof(i), RACE_TIMEOUT, racer_cont,
					  &r->c[i]);
			if (r->rc[i] != TR_OK)
				tr_test_latch_count_down(&r->done);
		}
	} else if (tr_msg_type(m) == T_FLUSH) {
		flush_beh(m);
	}
	return 0;
}

Test(ask, reply_racing_timeout_has_one_outcome)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct racer *r = calloc(1, sizeof(*r));
	uint64_t late[RACE_N];
	unsigned n_ok = 0, n_to = 0;
	tr_ref me;
	tr_stats st;

	cr_assert_not_null(r);
	for (unsigned i = 0; i < RACE_N; i++)
		late[i] = RACE_TIMEOUT / 2 + (uint64_t)i * RACE_TIMEOUT / RACE_N; /* 0.5 .. 1.5 x */
	server_init(&s, S_LATE, RACE_N);
	s.late_ns = late;
	r->srv = spawn_server(sys, &s);
	tr_test_latch_init(&r->done, RACE_N);
	cr_assert_eq(tr_spawn(sys, racer_beh, r, &me), TR_OK);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&r->done, WAIT_S), "%u of %d outcomes",
		  atomic_load(&r->outcomes), RACE_N);
	/* every late reply sent, then handled by the asker */
	for (uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;
	     atomic_load(&s.late_done) < RACE_N && now_ns() < end;)
		sleep_ms(1);
	cr_assert_eq(atomic_load(&s.late_done), RACE_N);
	flush(me);
	sleep_ms(20);
	st = sys_finish(&sys);

	for (unsigned i = 0; i < RACE_N; i++) {
		struct call *c = &r->c[i];

		cr_assert_eq(r->rc[i], TR_OK);
		cr_assert_eq(atomic_load(&c->calls), 1, "request %u: %d outcomes", i,
			     atomic_load(&c->calls));
		if (c->status == TR_OK) {
			n_ok++;
			cr_assert_eq(c->reply_val, i + 1000, "request %u got another's reply", i);
		} else {
			n_to++;
			cr_assert_eq(c->status, TR_ETIMEDOUT, "request %u: %s", i,
				     tr_err_name(c->status));
			cr_assert(c->reply_null);
			cr_assert_geq(c->t_done - c->t_ask, RACE_TIMEOUT, "request %u timed out "
				      "after %.3f ms", i, (double)(c->t_done - c->t_ask) / 1e6);
		}
	}
	cr_log_info("reply race: %u replies, %u timeouts, %llu late replies", n_ok, n_to,
		    (unsigned long long)st.late_replies);
	cr_assert_eq(st.late_replies, atomic_load(&s.replies_ok) - n_ok,
		     "late_replies %llu, but %u replies were sent and %u decided their request",
		     (unsigned long long)st.late_replies, atomic_load(&s.replies_ok), n_ok);
	free(r);
}

/* ------------------------------------------------ asker gone first */

/*
 * The asker stops with requests pending (one with a short timeout, one
 * long, one carrying a pointer): no continuation runs after the stop, not
 * even when the short timeout passes; answers afterwards are TR_EDEAD dead
 * letters; nothing leaks (ASan).
 */
struct quitter {
	tr_ref srv;
	int rc[3];
	atomic_int calls;
	atomic_bool cleaned_flag;
	atomic_int calls_after;
	tr_test_latch cleaned;
};

static int quitter_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct quitter *q = state;

	(void)ctx;
	(void)status;
	(void)reply;
	if (atomic_load(&q->cleaned_flag))
		atomic_fetch_add(&q->calls_after, 1);
	atomic_fetch_add(&q->calls, 1);
	return 0;
}

static int quitter_beh(void *state, tr_msg *m)
{
	struct quitter *q = state;
	uint64_t v = 1;

	if (tr_msg_type(m) == T_GO) {
		void *p = payload_new(3);

		q->rc[0] = tr_ask(q->srv, T_REQ, &v, sizeof(v), 20 * MS, quitter_cont, NULL);
		q->rc[1] = tr_ask(q->srv, T_REQ, &v, sizeof(v), LONG_NS, quitter_cont, NULL);
		q->rc[2] = tr_ask_ptr(q->srv, T_REQ, &p, counting_dtor, LONG_NS, quitter_cont, NULL);
		tr_stop_self(TR_OK);
	}
	return 0;
}

static void quitter_cleanup(void *state, int reason)
{
	struct quitter *q = state;

	(void)reason;
	atomic_store(&q->cleaned_flag, true);
	tr_test_latch_count_down(&q->cleaned);
}

Test(ask, asker_stops_with_requests_pending)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct quitter q = { .rc = { 12345, 12345, 12345 } };
	tr_actor_opts o = { .behaviour = quitter_beh, .state = &q, .cleanup = quitter_cleanup };
	tr_ref me;
	uint64_t v = 9;
	tr_stats st0, st;

	atomic_store(&dtor_calls, 0);
	server_init(&s, S_KEEP, 3);
	q.srv = spawn_server(sys, &s);
	tr_test_latch_init(&q.cleaned, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &me), TR_OK);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&q.cleaned, WAIT_S));
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	for (int i = 0; i < 3; i++)
		cr_assert_eq(q.rc[i], TR_OK, "ask %d: %s", i, tr_err_name(q.rc[i]));
	sleep_ms(60); /* past the short timeout */
	cr_assert_eq(tr_system_stats(sys, &st0), TR_OK);
	for (int i = 0; i < 3; i++) {
		int rc = tr_reply_to(s.kept[i], T_REP, &v, sizeof(v));

		cr_assert_eq(rc, TR_EDEAD, "reply to a stopped asker: %s", tr_err_name(rc));
	}
	flush(q.srv);
	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	cr_assert_eq(st.dead_letters - st0.dead_letters, 3,
		     "replies refused for a gone asker are dead letters");
	st = sys_finish(&sys);
	cr_assert_eq(atomic_load(&q.calls), 0, "%d continuations ran after the asker stopped",
		     atomic_load(&q.calls));
	cr_assert_eq(atomic_load(&dtor_calls), 1, "request pointer payload destroyed %d times",
		     atomic_load(&dtor_calls));
}

/* Pending requests when the system shuts down: no hang, no leak; a
 * continuation that still runs sees a failure status, never a reply. */
Test(ask, pending_requests_at_shutdown)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;

	server_init(&s, S_KEEP, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	sys_finish(&sys);
	cr_assert_leq(atomic_load(&cl.c.calls), 1);
	cr_assert_eq(atomic_load(&cl.calls_after_cleanup), 0, "continuation ran after cleanup");
	if (atomic_load(&cl.c.calls))
		cr_assert(cl.c.status == TR_ESHUTDOWN || cl.c.status == TR_EDEAD,
			  "pending request at shutdown: %s", tr_err_name(cl.c.status));
}

/* ---------------------------------------------------- deferred replies */

struct helper {
	int rc;
	tr_test_latch done;
};

static int helper_beh(void *state, tr_msg *m)
{
	struct helper *h = state;
	tr_reply_addr rt;
	uint64_t v = 555;

	if (tr_msg_type(m) == T_FWD) {
		memcpy(&rt, tr_msg_data(m), sizeof(rt));
		h->rc = tr_reply_to(rt, T_REP, &v, sizeof(v));
		tr_test_latch_count_down(&h->done);
	}
	return 0;
}

Test(ask, deferred_reply_from_another_actor)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct helper h = { .rc = 12345 };
	struct client cl;
	tr_ref me;

	tr_test_latch_init(&h.done, 1);
	server_init(&s, S_FWD, 1);
	cr_assert_eq(tr_spawn(sys, helper_beh, &h, &s.helper), TR_OK);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	cr_assert(tr_test_latch_wait(&h.done, WAIT_S));
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_val, 555);
	cr_assert_eq(h.rc, TR_OK);
	cr_assert_eq(s.reply_rc[0], TR_OK);
	sys_finish(&sys);
}

struct thread_reply {
	tr_reply_addr rt;
	int rc;
};

static void *thread_reply_main(void *arg)
{
	struct thread_reply *t = arg;
	uint64_t v = 777;

	t->rc = tr_reply_to(t->rt, T_REP, &v, sizeof(v));
	return NULL;
}

Test(ask, deferred_reply_from_a_plain_thread)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	struct thread_reply t = { .rc = 12345 };
	pthread_t th;
	tr_ref me;

	server_init(&s, S_KEEP, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 1);
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(atomic_load(&s.nkept), 1);
	t.rt = s.kept[0];
	cr_assert_eq(pthread_create(&th, NULL, thread_reply_main, &t), 0);
	pthread_join(th, NULL);
	cr_assert_eq(t.rc, TR_OK, "tr_reply_to from a thread: %s", tr_err_name(t.rc));
	cr_assert(tr_test_latch_wait(&cl.c.done, WAIT_S));
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_val, 777);
	sys_finish(&sys);
}

/* ---------------------------------------------------------- errors */

Test(ask, reply_to_plain_message_is_einval)
{
	tr_system *sys = sys_start(1);
	struct server s;
	tr_ref srv;
	tr_stats st;

	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	send_ok(srv, T_PLAIN, NULL, 0);
	flush(srv);
	cr_assert_eq(atomic_load(&s.plain), 1);
	cr_assert_not(s.plain_is_request);
	cr_assert_eq(s.plain_rt.to, 0);
	cr_assert_eq(s.plain_rt.corr, 0);
	cr_assert_eq(s.plain_reply_rc, TR_EINVAL, "tr_reply on a plain message: %s",
		     tr_err_name(s.plain_reply_rc));
	st = sys_finish(&sys);
	cr_assert_eq(st.late_replies, 0);
}

Test(ask, bad_replies_are_refused)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;

	server_init(&s, S_BADREPLY, 1);
	client_init(&cl, spawn_server(sys, &s), LONG_NS, 4);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	cr_assert_eq(s.reply_rc[0], TR_EINVAL, "reserved type: %s", tr_err_name(s.reply_rc[0]));
	cr_assert_eq(s.reply_rc[1], TR_EINVAL, "TR_MSG_DOWN: %s", tr_err_name(s.reply_rc[1]));
	cr_assert_eq(s.reply_rc[2], TR_EINVAL, "NULL data: %s", tr_err_name(s.reply_rc[2]));
	cr_assert_eq(s.reply_rc[3], TR_E2BIG, "too big: %s", tr_err_name(s.reply_rc[3]));
	cr_assert_eq(s.reply_rc[4], TR_OK);
	expect_status(&cl.c, TR_OK);
	cr_assert_eq(cl.c.reply_type, T_REP);
	cr_assert_eq(cl.c.reply_val, 1004);
	sys_finish(&sys);
}

/* Every refused tr_ask from inside an actor: the continuation never runs. */
struct badask {
	tr_ref srv;
	int rc[8];
	atomic_int calls;
	tr_test_latch done;
};

static int badask_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct badask *b = state;

	(void)ctx;
	(void)status;
	(void)reply;
	atomic_fetch_add(&b->calls, 1);
	return 0;
}

static int badask_beh(void *state, tr_msg *m)
{
	struct badask *b = state;
	char big[TR_MSG_INLINE_MAX + 1] = { 0 };
	uint64_t v = 1;
	void *p = &v;

	if (tr_msg_type(m) == T_GO) {
		b->rc[0] = tr_ask(b->srv, T_REQ, &v, sizeof(v), LONG_NS, NULL, NULL);
		b->rc[1] = tr_ask(TR_REF_NONE, T_REQ, &v, sizeof(v), LONG_NS, badask_cont, NULL);
		b->rc[2] = tr_ask(b->srv, T_REQ, NULL, sizeof(v), LONG_NS, badask_cont, NULL);
		b->rc[3] = tr_ask(b->srv, TR_MSG_TYPE_RUNTIME, &v, sizeof(v), LONG_NS,
				  badask_cont, NULL);
		b->rc[4] = tr_ask(b->srv, T_REQ, big, sizeof(big), LONG_NS, badask_cont, NULL);
		b->rc[5] = tr_ask_ptr(b->srv, T_REQ, NULL, NULL, LONG_NS, badask_cont, NULL);
		b->rc[6] = tr_ask_ptr(b->srv, T_REQ, &p, NULL, LONG_NS, NULL, NULL);
		b->rc[7] = p == &v; /* ownership stays with the caller on error */
		tr_test_latch_count_down(&b->done);
	} else if (tr_msg_type(m) == T_FLUSH) {
		flush_beh(m);
	}
	return 0;
}

Test(ask, argument_errors)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct badask b = { .calls = 0 };
	tr_ref me, srv;
	uint64_t v = 1;
	void *p = &v;

	server_init(&s, S_ECHO, 0);
	srv = spawn_server(sys, &s);
	b.srv = srv;
	tr_test_latch_init(&b.done, 1);
	cr_assert_eq(tr_spawn(sys, badask_beh, &b, &me), TR_OK);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&b.done, WAIT_S));
	cr_assert_eq(b.rc[0], TR_EINVAL, "fn NULL: %s", tr_err_name(b.rc[0]));
	cr_assert_eq(b.rc[1], TR_EINVAL, "to NONE: %s", tr_err_name(b.rc[1]));
	cr_assert_eq(b.rc[2], TR_EINVAL, "NULL data: %s", tr_err_name(b.rc[2]));
	cr_assert_eq(b.rc[3], TR_EINVAL, "reserved type: %s", tr_err_name(b.rc[3]));
	cr_assert_eq(b.rc[4], TR_E2BIG, "too big: %s", tr_err_name(b.rc[4]));
	cr_assert_eq(b.rc[5], TR_EINVAL, "ptr_p NULL: %s", tr_err_name(b.rc[5]));
	cr_assert_eq(b.rc[6], TR_EINVAL, "ask_ptr fn NULL: %s", tr_err_name(b.rc[6]));
	cr_assert_eq(b.rc[7], 1, "refused tr_ask_ptr took the pointer");

	/* outside an actor */
	cr_assert_eq(tr_ask(srv, T_REQ, &v, sizeof(v), LONG_NS, badask_cont, NULL), TR_ENOTACTOR);
	cr_assert_eq(tr_ask_ptr(srv, T_REQ, &p, NULL, LONG_NS, badask_cont, NULL), TR_ENOTACTOR);
	cr_assert_eq(p, &v);

	sleep_ms(10);
	flush(me);
	flush(srv);
	cr_assert_eq(atomic_load(&b.calls), 0, "continuation of a refused ask ran");
	cr_assert_eq(atomic_load(&s.requests), 0, "a refused ask reached the server");
	sys_finish(&sys);
}

/* ------------------------------------------------- pointer payloads */

static void ask_ptr_case(int mode, bool kill_server_first, int want_status, int want_dtor)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref srv, me;

	atomic_store(&dtor_calls, 0);
	server_init(&s, mode, kill_server_first ? 0 : 1);
	srv = spawn_server(sys, &s);
	if (kill_server_first) {
		cr_assert_eq(tr_stop(srv), TR_OK);
		cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	}
	client_init(&cl, srv, LONG_NS, 0);
	cl.use_ptr = true;
	cl.ptr = payload_new(8);
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	cr_assert_null(cl.ptr, "tr_ask_ptr TR_OK must take the pointer");
	expect_status(&cl.c, want_status);
	if (want_status == TR_OK)
		cr_assert_eq(cl.c.reply_val, 1008);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&dtor_calls), want_dtor, "dtor ran %d times, want %d",
		     atomic_load(&dtor_calls), want_dtor);
}

Test(ask, ask_ptr_taken_by_server)
{
	ask_ptr_case(S_PTR_TAKE, false, TR_OK, 0);
}

Test(ask, ask_ptr_not_taken_is_destroyed_once)
{
	ask_ptr_case(S_ECHO, false, TR_OK, 1);
}

Test(ask, ask_ptr_to_dead_target_is_destroyed_once)
{
	ask_ptr_case(S_ECHO, true, TR_EDEAD, 1);
}

Test(ask, reply_ptr_ownership)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl, cl2;
	tr_ref srv, me, me2;

	atomic_store(&dtor_calls, 0);
	server_init(&s, S_REPLY_PTR, 2);
	srv = spawn_server(sys, &s);
	/* taken by the continuation: no dtor */
	client_init(&cl, srv, LONG_NS, 1);
	cl.take_reply = true;
	me = spawn_client(sys, &cl);
	ask_and_wait(me, &cl);
	flush(me);
	expect_status(&cl.c, TR_OK);
	cr_assert(cl.c.reply_ptr);
	cr_assert_eq(cl.c.reply_val, 1001);
	cr_assert_eq(s.reply_rc[0], TR_OK);
	cr_assert_eq(s.reply_rc[1], 1, "tr_reply_ptr TR_OK must take the pointer");
	cr_assert_eq(atomic_load(&dtor_calls), 0);
	/* not taken: destroyed once after the continuation */
	client_init(&cl2, srv, LONG_NS, 2);
	me2 = spawn_client(sys, &cl2);
	ask_and_wait(me2, &cl2);
	flush(me2);
	expect_status(&cl2.c, TR_OK);
	cr_assert_eq(cl2.c.reply_val, 1002);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&dtor_calls), 1, "untaken reply payload destroyed %d times",
		     atomic_load(&dtor_calls));
}

/* A refused tr_reply_ptr leaves the pointer with the caller. */
Test(ask, reply_ptr_error_keeps_ownership)
{
	tr_system *sys = sys_start(2);
	struct server s;
	struct client cl;
	tr_ref me;
	void *p = payload_new(1), *orig = p;

	atomic_store(&dtor_calls, 0);
	server_init(&s, S_KEEP, 1);
	client_init(&cl, spawn_server(sys, &s), 20 * MS, 1);
	cl.stop_after_ask = true;
	me = spawn_client(sys, &cl);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&cl.cleaned, WAIT_S));
	cr_assert(tr_test_latch_wait(&s.got_req, WAIT_S));
	cr_assert_eq(tr_reply_ptr(s.kept[0], T_REP, &p, counting_dtor), TR_EDEAD);
	cr_assert_eq(p, orig);
	cr_assert_eq(tr_reply_ptr(s.kept[0], TR_MSG_TYPE_RUNTIME, &p, counting_dtor), TR_EINVAL);
	cr_assert_eq(p, orig);
	cr_assert_eq(tr_reply_ptr(s.kept[0], T_REP, NULL, counting_dtor), TR_EINVAL);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&dtor_calls), 0);
	cr_assert_eq(atomic_load(&cl.c.calls), 0);
	free(p);
}

/* ------------------------------------------------- many at once */

#define MANY_N 2000
#define MANY_SERVERS 4

struct fan {
	tr_ref srv[MANY_SERVERS];
	atomic_int calls[MANY_N];
	int bad_status, bad_val, bad_ctx;
	int first_bad;
	int rc_bad;
	atomic_uint outcomes;
	tr_test_latch done;
};

struct fan_ctx {
	uint32_t i;
	uint32_t magic;
};

static struct fan_ctx fan_ctx[MANY_N];

static int fan_cont(void *state, void *ctx, int status, tr_msg *reply)
{
	struct fan *f = state;
	struct fan_ctx *c = ctx;
	uint64_t v = 0;

	if (c < fan_ctx || c >= fan_ctx + MANY_N || c->magic != 0xF00D) {
		f->bad_ctx++;
		return 0;
	}
	if (status != TR_OK) {
		if (f->bad_status++ == 0)
			f->first_bad = status;
	} else if (reply && tr_msg_size(reply) == sizeof(v)) {
		memcpy(&v, tr_msg_data(reply), sizeof(v));
		if (v != c->i + 1000u)
			f->bad_val++;
	} else {
		f->bad_val++;
	}
	atomic_fetch_add(&f->calls[c->i], 1);
	atomic_fetch_add(&f->outcomes, 1);
	tr_test_latch_count_down(&f->done);
	return 0;
}

static int fan_beh(void *state, tr_msg *m)
{
	struct fan *f = state;

	if (tr_msg_type(m) == T_GO) {
		for (uint64_t i = 0; i < MANY_N; i++) {
			if (tr_ask(f->srv[i % MANY_SERVERS], T_REQ, &i, sizeof(i), LONG_NS, fan_cont,
				   &fan_ctx[i]) != TR_OK) {
				f->rc_bad++;
				tr_test_latch_count_down(&f->done);
			}
		}
	} else if (tr_msg_type(m) == T_FLUSH) {
		flush_beh(m);
	}
	return 0;
}

Test(ask, many_concurrent_asks_to_several_servers)
{
	tr_system *sys = sys_start(2);
	struct server s[MANY_SERVERS];
	struct fan *f = calloc(1, sizeof(*f));
	tr_ref me;

	cr_assert_not_null(f);
	for (uint32_t i = 0; i < MANY_N; i++)
		fan_ctx[i] = (struct fan_ctx){ i, 0xF00D };
	for (int i = 0; i < MANY_SERVERS; i++) {
		server_init(&s[i], S_ECHO, MANY_N / MANY_SERVERS);
		f->srv[i] = spawn_server(sys, &s[i]);
	}
	tr_test_latch_init(&f->done, MANY_N);
	cr_assert_eq(tr_spawn(sys, fan_beh, f, &me), TR_OK);
	send_ok(me, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&f->done, WAIT_S), "%u of %d outcomes",
		  atomic_load(&f->outcomes), MANY_N);
	sleep_ms(10);
	flush(me);
	cr_assert_eq(f->rc_bad, 0);
	cr_assert_eq(f->bad_ctx, 0);
	cr_assert_eq(f->bad_status, 0, "first bad status %s", tr_err_name(f->first_bad));
	cr_assert_eq(f->bad_val, 0, "%d replies went to the wrong continuation", f->bad_val);
	for (int i = 0; i < MANY_N; i++)
		cr_assert_eq(atomic_load(&f->calls[i]), 1, "request %d: %d outcomes", i,
			     atomic_load(&f->calls[i]));
	for (int i = 0; i < MANY_SERVERS; i++)
		cr_assert_eq(atomic_load(&s[i].requests), MANY_N / MANY_SERVERS);
	sys_finish(&sys);
	free(f);
}
