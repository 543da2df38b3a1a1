/*
 * The worker's outbox (runtime/outbox.c): messages a behaviour sends are
 * held and pushed in chains. These tests check what holding must not
 * change: order per sender and receiver across chain and slot boundaries,
 * runtime requests coming after what was sent before them, dead letters for
 * a receiver that stops while its messages are held, graceful shutdown
 * delivering held messages, and blocking inside a behaviour (tr_flush,
 * tr_future_wait) publishing what the blocker waits for.
 *
 * The tests block a worker inside a behaviour on a latch on purpose: that
 * keeps messages held for as long as the test needs. Two workers, so the
 * receivers can run meanwhile.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "support.h"

#define WAIT_S 30

TestSuite(outbox, .timeout = 120);

enum { T_GO = 0x100, T_SEQ, T_PING, T_ASK, T_ANSWER };

static tr_system *sys_start(unsigned workers)
{
	tr_config cfg;
	tr_system *sys = NULL;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = workers;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	return sys;
}

static tr_stats sys_finish(tr_system **sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_shutdown(*sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(*sys, &st), TR_OK);
	tr_system_destroy(sys);
	return st;
}

static tr_ref spawn_opts(tr_system *sys, tr_behaviour b, void *state, tr_cleanup_fn cleanup)
{
	tr_actor_opts o = { .behaviour = b, .state = state, .cleanup = cleanup };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

static uint64_t u64_of(const tr_msg *m)
{
	uint64_t x = UINT64_MAX;

	if (tr_msg_size(m) == sizeof(x))
		memcpy(&x, tr_msg_data(m), sizeof(x));
	return x;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- receivers: check that seqs arrive 0, 1, 2, ... ---- */

struct rcv {
	uint64_t next;         /* expected seq */
	uint64_t want;         /* count the latch down at this many */
	_Atomic uint64_t got;
	_Atomic uint64_t bad;  /* out of order or unexpected */
	_Atomic int stopped_after; /* messages handled before cleanup; -1 before */
	tr_test_latch *done;
};

static int rcv_beh(void *state, tr_msg *m)
{
	struct rcv *r = state;

	if (tr_msg_type(m) != T_SEQ || u64_of(m) != r->next)
		atomic_fetch_add(&r->bad, 1);
	r->next++;
	if (atomic_fetch_add(&r->got, 1) + 1 == r->want && r->done)
		tr_test_latch_count_down(r->done);
	return 0;
}

static void rcv_cleanup(void *state, int reason)
{
	struct rcv *r = state;

	(void)reason;
	atomic_store(&r->stopped_after, (int)atomic_load(&r->got));
}

static void rcv_init(struct rcv *r, uint64_t want, tr_test_latch *done)
{
	memset(r, 0, sizeof(*r));
	r->want = want;
	r->done = done;
	atomic_store(&r->stopped_after, -1);
}

static int send_seq(tr_ref to, uint64_t x) { return tr_send(to, T_SEQ, &x, sizeof(x)); }

/* ---- a sender that runs a script when told T_GO ---- */

struct sender {
	int (*script)(struct sender *s);
	tr_ref *to;
	unsigned nto;
	uint64_t n;
	tr_test_latch holding, release; /* the script may block between them */
	_Atomic int rc;
	_Atomic bool released;
};

static int sender_beh(void *state, tr_msg *m)
{
	struct sender *s = state;

	if (tr_msg_type(m) == T_GO)
		atomic_store(&s->rc, s->script(s));
	return 0;
}

static struct sender *sender_new(int (*script)(struct sender *), tr_ref *to, unsigned nto,
				 uint64_t n)
{
	struct sender *s = calloc(1, sizeof(*s));

	cr_assert_not_null(s);
	s->script = script;
	s->to = to;
	s->nto = nto;
	s->n = n;
	tr_test_latch_init(&s->holding, 1);
	tr_test_latch_init(&s->release, 1);
	atomic_store(&s->rc, -1);
	return s;
}

static void sender_free(struct sender *s)
{
	tr_test_latch_destroy(&s->holding);
	tr_test_latch_destroy(&s->release);
	free(s);
}

static void go(tr_ref sender) { cr_assert_eq(tr_send(sender, T_GO, NULL, 0), TR_OK); }

/* ---- order ---- */

/* n seqs to each receiver, interleaved: many full chains per receiver. */
static int interleaved(struct sender *s)
{
	int rc = TR_OK;

	for (uint64_t i = 0; i < s->n && rc == TR_OK; i++)
		for (unsigned k = 0; k < s->nto && rc == TR_OK; k++)
			rc = send_seq(s->to[k], i);
	return rc;
}

static void run_order(unsigned nrcv, uint64_t n)
{
	tr_system *sys = sys_start(2);
	struct rcv *r = calloc(nrcv, sizeof(*r));
	tr_ref *to = calloc(nrcv, sizeof(*to));
	tr_test_latch done;
	struct sender *s = sender_new(interleaved, to, nrcv, n);
	tr_stats st;

	cr_assert(r && to);
	tr_test_latch_init(&done, nrcv);
	for (unsigned k = 0; k < nrcv; k++) {
		rcv_init(&r[k], n, &done);
		to[k] = spawn_opts(sys, rcv_beh, &r[k], NULL);
	}
	go(spawn_opts(sys, sender_beh, s, NULL));
	cr_assert(tr_test_latch_wait(&done, WAIT_S), "not every receiver got its messages");
	st = sys_finish(&sys);
	cr_assert_eq(atomic_load(&s->rc), 0);
	for (unsigned k = 0; k < nrcv; k++) {
		cr_assert_eq(atomic_load(&r[k].got), n, "receiver %u got %lu", k,
			     (unsigned long)atomic_load(&r[k].got));
		cr_assert_eq(atomic_load(&r[k].bad), 0, "receiver %u: out of order", k);
	}
	cr_assert_eq(st.undelivered, 0);
	cr_assert_eq(st.sent, st.delivered);
	tr_test_latch_destroy(&done);
	sender_free(s);
	free(r);
	free(to);
}

Test(outbox, a_burst_to_a_few_receivers_keeps_order) { run_order(3, 20000); }

/* More receivers than the outbox has slots: slots are taken over, their
 * chains pushed early. */
Test(outbox, more_receivers_than_slots_keep_order) { run_order(700, 5); }

/* ---- runtime requests ---- */

static int send_then_stop(struct sender *s)
{
	int rc = TR_OK;

	for (uint64_t i = 0; i < s->n && rc == TR_OK; i++)
		rc = send_seq(s->to[0], i);
	return rc == TR_OK ? tr_stop(s->to[0]) : rc;
}

Test(outbox, a_stop_request_comes_after_the_messages_sent_before_it)
{
	tr_system *sys = sys_start(2);
	struct rcv r;
	tr_ref to;
	struct sender *s;

	rcv_init(&r, 0, NULL);
	to = spawn_opts(sys, rcv_beh, &r, rcv_cleanup);
	s = sender_new(send_then_stop, &to, 1, 10);
	go(spawn_opts(sys, sender_beh, s, NULL));
	for (int i = 0; i < WAIT_S * 100 && atomic_load(&r.stopped_after) < 0; i++)
		sleep_ms(10);
	cr_assert_eq(atomic_load(&s->rc), TR_OK);
	cr_assert_eq(atomic_load(&r.stopped_after), 10, "stopped after %d of 10 messages",
		     atomic_load(&r.stopped_after));
	cr_assert_eq(atomic_load(&r.bad), 0);
	sys_finish(&sys);
	sender_free(s);
}

/* ---- dead receivers ---- */

/* Sends, then blocks outside troupe (so nothing is flushed) until told. */
static int send_then_block(struct sender *s)
{
	int rc = TR_OK;

	for (uint64_t i = 0; i < s->n && rc == TR_OK; i++)
		rc = send_seq(s->to[0], i);
	tr_test_latch_count_down(&s->holding);
	atomic_store(&s->released, tr_test_latch_wait(&s->release, WAIT_S));
	return rc;
}

Test(outbox, held_messages_for_a_receiver_that_stopped_are_dead_letters)
{
	tr_system *sys = sys_start(2);
	/* apart, so the receiver runs while the sender blocks */
	tr_actor_opts ro = { .behaviour = rcv_beh, .cleanup = rcv_cleanup, .worker = 2 };
	tr_actor_opts so = { .behaviour = sender_beh, .worker = 1 };
	struct rcv r;
	tr_ref to, from;
	struct sender *s;
	tr_stats st;
	uint64_t got;

	rcv_init(&r, 0, NULL);
	ro.state = &r;
	cr_assert_eq(tr_spawn_opts(sys, &ro, &to), TR_OK);
	/* the first message to a receiver goes straight out, the other 10
	 * are held */
	s = sender_new(send_then_block, &to, 1, 11);
	so.state = s;
	cr_assert_eq(tr_spawn_opts(sys, &so, &from), TR_OK);
	go(from);
	cr_assert(tr_test_latch_wait(&s->holding, WAIT_S));
	/* the receiver dies while the 10 are held */
	cr_assert_eq(tr_kill(to), TR_OK);
	for (int i = 0; i < WAIT_S * 100 && atomic_load(&r.stopped_after) < 0; i++)
		sleep_ms(10);
	cr_assert_leq(atomic_load(&r.stopped_after), 1, "the receiver got held messages early");
	tr_test_latch_count_down(&s->release);
	st = sys_finish(&sys);
	cr_assert(atomic_load(&s->released));
	got = atomic_load(&r.got);
	cr_assert_leq(got, 1);
	cr_assert_eq(st.undelivered, 11 - got, "undelivered %lu", (unsigned long)st.undelivered);
	cr_assert_geq(st.dead_letters, 11 - got);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
	sender_free(s);
}

/* ---- shutdown ---- */

static void *shutdown_thread(void *arg)
{
	return (void *)(intptr_t)tr_system_shutdown(arg, TR_SHUTDOWN_GRACEFUL);
}

Test(outbox, graceful_shutdown_delivers_what_a_blocked_sender_holds)
{
	tr_system *sys = sys_start(2);
	struct rcv r;
	tr_ref to;
	struct sender *s;
	pthread_t t;
	void *rc;
	tr_stats st;

	rcv_init(&r, 0, NULL);
	to = spawn_opts(sys, rcv_beh, &r, rcv_cleanup);
	s = sender_new(send_then_block, &to, 1, 100);
	go(spawn_opts(sys, sender_beh, s, NULL));
	cr_assert(tr_test_latch_wait(&s->holding, WAIT_S));
	cr_assert_eq(pthread_create(&t, NULL, shutdown_thread, sys), 0);
	sleep_ms(100); /* lets the shutdown get as far as it can meanwhile */
	tr_test_latch_count_down(&s->release);
	cr_assert_eq(pthread_join(t, &rc), 0);
	cr_assert_eq((intptr_t)rc, TR_OK);
	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	tr_system_destroy(&sys);
	cr_assert_eq(atomic_load(&r.got), 100, "the receiver got %lu of 100",
		     (unsigned long)atomic_load(&r.got));
	cr_assert_eq(atomic_load(&r.bad), 0);
	cr_assert_eq(st.undelivered, 0);
	sender_free(s);
}

/* ---- blocking inside a behaviour ---- */

struct pinger {
	tr_test_latch got;
};

static int ping_beh(void *state, tr_msg *m)
{
	struct pinger *p = state;

	if (tr_msg_type(m) == T_PING)
		tr_test_latch_count_down(&p->got);
	return 0;
}

static struct pinger *the_pinger;

/* Sends, flushes, then waits outside troupe for the receiver's reaction. */
static int ping_flush_wait(struct sender *s)
{
	int rc = tr_send(s->to[0], T_PING, NULL, 0);

	if (rc == TR_OK)
		rc = tr_flush();
	if (rc == TR_OK && !tr_test_latch_wait(&the_pinger->got, WAIT_S))
		rc = TR_ETIMEDOUT;
	return rc;
}

Test(outbox, tr_flush_publishes_before_a_behaviour_blocks)
{
	tr_system *sys = sys_start(2);
	struct pinger p;
	tr_ref to;
	struct sender *s;

	cr_assert_eq(tr_flush(), TR_ENOTACTOR);
	tr_test_latch_init(&p.got, 1);
	the_pinger = &p;
	to = spawn_opts(sys, ping_beh, &p, NULL);
	s = sender_new(ping_flush_wait, &to, 1, 0);
	go(spawn_opts(sys, sender_beh, s, NULL));
	for (int i = 0; i < WAIT_S * 100 && atomic_load(&s->rc) == -1; i++)
		sleep_ms(10);
	cr_assert_eq(atomic_load(&s->rc), TR_OK, "%s", tr_err_name(atomic_load(&s->rc)));
	sys_finish(&sys);
	tr_test_latch_destroy(&p.got);
	sender_free(s);
}

static int answer_beh(void *state, tr_msg *m)
{
	uint64_t x = u64_of(m) + 1;

	(void)state;
	return tr_reply(m, T_ANSWER, &x, sizeof(x));
}

/* Asks and waits for the future inside the behaviour. */
static int ask_and_wait(struct sender *s)
{
	uint64_t x = 41;
	tr_future *f = NULL;
	int rc = tr_ask_future(s->to[0], T_ASK, &x, sizeof(x), 10000000000ull, &f);

	if (rc != TR_OK)
		return rc;
	rc = tr_future_wait(f, (int64_t)WAIT_S * 1000000000);
	if (rc == TR_OK && u64_of(tr_future_reply(f)) != 42)
		rc = TR_EFAILED;
	tr_future_destroy(&f);
	return rc;
}

Test(outbox, a_future_waited_for_inside_a_behaviour_completes)
{
	tr_system *sys = sys_start(2);
	tr_ref to;
	struct sender *s;

	to = spawn_opts(sys, answer_beh, NULL, NULL);
	s = sender_new(ask_and_wait, &to, 1, 0);
	go(spawn_opts(sys, sender_beh, s, NULL));
	for (int i = 0; i < WAIT_S * 100 && atomic_load(&s->rc) == -1; i++)
		sleep_ms(10);
	cr_assert_eq(atomic_load(&s->rc), TR_OK, "%s", tr_err_name(atomic_load(&s->rc)));
	sys_finish(&sys);
	sender_free(s);
}
