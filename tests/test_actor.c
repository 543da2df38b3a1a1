/*
 * Unit tests for troupe/actor.h: spawning, the init and cleanup hooks and
 * their reasons, stopping, tr_self*, one message at a time, and references
 * that outlive their actor.
 *
 * Where messages must sit in a mailbox before an actor runs, the test parks
 * the only worker of a one-worker system in a "blocker" actor until it has
 * sent them.
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

TestSuite(actor, .timeout = 120);

enum {
	T_DATA = 0x200,
	T_BLOCK,
	T_PROBE,
	T_GO,
	T_STOP_SELF,
	T_FAIL,
};

/* ---- systems ---- */

static tr_system *sys_new(unsigned workers)
{
	tr_config cfg;
	tr_system *sys = NULL;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = workers;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	return sys;
}

static tr_system *sys_start(unsigned workers)
{
	tr_system *sys = sys_new(workers);

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

static tr_ref spawn(tr_system *sys, tr_behaviour b, void *state)
{
	tr_ref r = TR_REF_NONE;
	int rc = tr_spawn(sys, b, state, &r);

	cr_assert_eq(rc, TR_OK, "tr_spawn: %s", tr_err_name(rc));
	cr_assert(!tr_ref_is_none(r));
	return r;
}

static void send_ok(tr_ref to, uint32_t type)
{
	int rc = tr_send(to, type, NULL, 0);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Sends probes until `r` refuses them: the reference turns stale around the
 * cleanup hook, which may still be running when the test wakes. Probes
 * accepted meanwhile are undelivered; exactly one refused dead letter. */
static void wait_dead(tr_ref r)
{
	double end = tr_test_now() + WAIT_S;
	int rc;

	while ((rc = tr_send(r, T_PROBE, NULL, 0)) == TR_OK) {
		cr_assert_lt(tr_test_now(), end, "reference never turned stale");
		sched_yield();
	}
	cr_assert_eq(rc, TR_EDEAD, "%s", tr_err_name(rc));
}

/* ---- blocker: parks its worker until released ---- */

struct blocker {
	tr_test_latch entered;
	tr_test_latch release;
};

static int blocker_beh(void *state, tr_msg *m)
{
	struct blocker *b = state;

	if (tr_msg_type(m) == T_BLOCK) {
		tr_test_latch_count_down(&b->entered);
		tr_test_latch_wait(&b->release, WAIT_S);
	}
	return 0;
}

static void blocker_hold(tr_system *sys, struct blocker *b)
{
	tr_test_latch_init(&b->entered, 1);
	tr_test_latch_init(&b->release, 1);
	send_ok(spawn(sys, blocker_beh, b), T_BLOCK);
	cr_assert(tr_test_latch_wait(&b->entered, WAIT_S), "blocker never ran");
}

static void blocker_release(struct blocker *b)
{
	tr_test_latch_count_down(&b->release);
}

/* ---- life: an actor that reports its life cycle ---- */

struct life {
	unsigned msgs;            /* T_DATA delivered */
	unsigned msgs_at_cleanup;
	int cleanups;
	int reason;
	int fail_with;            /* returned on T_FAIL */
	int stop_reason;          /* passed to tr_stop_self on T_STOP_SELF */
	int stop_self_rc;
	tr_system *sys_in_cleanup;
	tr_test_latch got;        /* one count per T_DATA */
	tr_test_latch cleaned;
};

static void life_init(struct life *l, uint64_t expect_msgs)
{
	memset(l, 0, sizeof(*l));
	l->reason = 12345; /* no TR_* code */
	l->stop_self_rc = 12345;
	tr_test_latch_init(&l->got, expect_msgs);
	tr_test_latch_init(&l->cleaned, 1);
}

static int life_beh(void *state, tr_msg *m)
{
	struct life *l = state;

	switch (tr_msg_type(m)) {
	case T_DATA:
		l->msgs++;
		tr_test_latch_count_down(&l->got);
		break;
	case T_STOP_SELF:
		l->stop_self_rc = tr_stop_self(l->stop_reason);
		break;
	case T_FAIL:
		return l->fail_with;
	}
	return 0;
}

static void life_cleanup(void *state, int reason)
{
	struct life *l = state;

	l->cleanups++;
	l->reason = reason;
	l->msgs_at_cleanup = l->msgs;
	l->sys_in_cleanup = tr_self_system();
	tr_test_latch_count_down(&l->cleaned);
}

static tr_ref spawn_life(tr_system *sys, struct life *l)
{
	tr_actor_opts o = { .behaviour = life_beh, .state = l, .cleanup = life_cleanup };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

static void wait_cleaned(struct life *l)
{
	cr_assert(tr_test_latch_wait(&l->cleaned, WAIT_S), "cleanup never ran");
}

/* ---- spawning and the behaviour ---- */

struct counter {
	void *self_ptr;   /* the state pointer the runtime must hand back */
	unsigned n;
	bool wrong_state;
	tr_test_latch done;
};

static int counter_beh(void *state, tr_msg *m)
{
	struct counter *c = state;

	(void)m;
	if (c->self_ptr != c)
		c->wrong_state = true;
	c->n++;
	tr_test_latch_count_down(&c->done);
	return 0;
}

Test(actor, behaviour_runs_with_its_state)
{
	enum { N = 10 };
	tr_system *sys = sys_start(2);
	struct counter c = { .self_ptr = &c };
	tr_ref r;

	tr_test_latch_init(&c.done, N);
	r = spawn(sys, counter_beh, &c);
	for (int i = 0; i < N; i++)
		send_ok(r, T_DATA);
	cr_assert(tr_test_latch_wait(&c.done, WAIT_S));
	sys_finish(&sys);
	cr_assert_not(c.wrong_state);
	cr_assert_eq(c.n, N);
}

/* A behaviour's state may live on the heap and die in cleanup: the runtime
 * must not touch it afterwards (ASan checks). */
static atomic_int freed;
static unsigned seen_at_free;

static void free_cleanup(void *state, int reason)
{
	(void)reason;
	seen_at_free = *(unsigned *)state;
	atomic_fetch_add(&freed, 1);
	free(state);
}

static int heap_beh(void *state, tr_msg *m)
{
	(void)m;
	(*(unsigned *)state)++;
	return 0;
}

Test(actor, cleanup_may_free_state)
{
	tr_system *sys = sys_start(2);
	unsigned *st = calloc(1, sizeof(*st));
	tr_actor_opts o = { .behaviour = heap_beh, .state = st, .cleanup = free_cleanup };
	tr_ref r;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	for (int i = 0; i < 100; i++)
		send_ok(r, T_DATA);
	cr_assert_eq(tr_stop(r), TR_OK);
	for (int i = 0; i < 100; i++)
		(void)tr_send(r, T_DATA, NULL, 0);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&freed), 1);
	cr_assert_eq(seen_at_free, 100);
}

/* ---- init hook ---- */

struct init_rec {
	int ran;
	int ret;             /* what the hook returns */
	tr_ref self;
	tr_system *sys;
	pthread_t thread;
	int cleanups;
};

static int rec_init(void *state)
{
	struct init_rec *ir = state;

	ir->ran++;
	ir->self = tr_self();
	ir->sys = tr_self_system();
	ir->thread = pthread_self();
	return ir->ret;
}

static void rec_cleanup(void *state, int reason)
{
	(void)reason;
	((struct init_rec *)state)->cleanups++;
}

static int idle_beh(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

static int spawn_rec(tr_system *sys, struct init_rec *ir, tr_ref *out)
{
	tr_actor_opts o = {
		.behaviour = idle_beh,
		.state = ir,
		.init = rec_init,
		.cleanup = rec_cleanup,
	};

	return tr_spawn_opts(sys, &o, out);
}

/* `ir` outlives the actor: its cleanup hook reports there at shutdown. */
static void check_init_runs_inside_spawn(tr_system *sys, struct init_rec *ir)
{
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(spawn_rec(sys, ir, &r), TR_OK);
	cr_assert_eq(ir->ran, 1, "init must have run when tr_spawn returns");
	cr_assert(tr_ref_eq(ir->self, r), "tr_self() in init %#llx, spawned %#llx",
		  (unsigned long long)ir->self.id, (unsigned long long)r.id);
	cr_assert_eq(ir->sys, sys);
	cr_assert(pthread_equal(ir->thread, pthread_self()), "init ran on another thread");
	/* The spawning thread is itself again. */
	cr_assert(tr_ref_is_none(tr_self()));
	cr_assert_null(tr_self_system());
}

Test(actor, init_runs_inside_spawn_as_new_actor)
{
	tr_system *sys = sys_new(1);
	struct init_rec before = { 0 }, after = { 0 };

	check_init_runs_inside_spawn(sys, &before); /* allowed before start */
	cr_assert_eq(tr_system_start(sys), TR_OK);
	check_init_runs_inside_spawn(sys, &after);
	sys_finish(&sys);
	cr_assert_eq(before.cleanups, 1);
	cr_assert_eq(after.cleanups, 1);
}

static void check_init_failure(int ret)
{
	tr_system *sys = sys_start(1);
	struct init_rec ir = { .ret = ret };
	tr_ref r = TR_REF_NONE;
	tr_stats st;

	cr_assert_eq(spawn_rec(sys, &ir, &r), ret,
		     "tr_spawn must return the init's value %d", ret);
	cr_assert_eq(ir.ran, 1);
	st = sys_finish(&sys);
	cr_assert_eq(ir.cleanups, 0, "cleanup ran for a discarded actor (init %d)", ret);
	cr_assert_eq(st.alive, 0);
	cr_assert_eq(st.spawned, 0, "a discarded actor counted as spawned");
}

Test(actor, init_failure_fails_spawn_without_cleanup)
{
	check_init_failure(42);
	check_init_failure(-1);
	check_init_failure(TR_EFAILED);
}

/* Messages an init hook sends to its own actor wait until init returned and
 * are delivered; if init then fails they are destroyed undelivered. */
static atomic_int dtor_calls;

static void counting_dtor(void *p)
{
	atomic_fetch_add(&dtor_calls, 1);
	free(p);
}

struct self_sender {
	int ret;         /* init's return value */
	int send_rc;
	tr_ref self;
	unsigned got;
	tr_ref got_from;
	tr_test_latch done;
};

static int self_send_init(void *state)
{
	struct self_sender *ss = state;
	void *p = malloc(16);

	ss->self = tr_self();
	ss->send_rc = tr_send_ptr(ss->self, T_DATA, &p, counting_dtor);
	if (ss->send_rc != TR_OK)
		free(p);
	return ss->ret;
}

static int self_send_beh(void *state, tr_msg *m)
{
	struct self_sender *ss = state;

	ss->got++;
	ss->got_from = tr_msg_sender(m);
	tr_test_latch_count_down(&ss->done);
	return 0;
}

static void check_init_self_send(int ret)
{
	tr_system *sys = sys_start(1);
	struct self_sender ss = { .ret = ret, .send_rc = 1 };
	tr_actor_opts o = { .behaviour = self_send_beh, .state = &ss, .init = self_send_init };
	tr_ref r = TR_REF_NONE;
	tr_stats st;

	tr_test_latch_init(&ss.done, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), ret);
	cr_assert_eq(ss.send_rc, TR_OK, "%s", tr_err_name(ss.send_rc));
	if (ret == TR_OK) {
		cr_assert(tr_test_latch_wait(&ss.done, WAIT_S));
		cr_assert(tr_ref_eq(ss.got_from, r));
	}
	st = sys_finish(&sys);
	cr_assert_eq(atomic_load(&dtor_calls), 1, "payload destroyed %d times",
		     atomic_load(&dtor_calls));
	cr_assert_eq(ss.got, ret == TR_OK ? 1u : 0u);
	cr_assert_eq(st.sent, 1);
	cr_assert_eq(st.delivered + st.undelivered, 1);
	cr_assert_eq(st.undelivered, ret == TR_OK ? 0u : 1u);
}

Test(actor, init_may_message_itself)
{
	check_init_self_send(TR_OK);
}

Test(actor, failed_init_discards_its_messages)
{
	check_init_self_send(TR_EFAILED);
}

/* ---- spawning from inside an actor ---- */

struct parent {
	struct init_rec child_ir; /* the first child's init hook reports here */
	struct counter counted;   /* the second child counts its messages */
	tr_ref child_ref;
	tr_ref self_before, self_after;
	tr_system *sys_seen;
	int spawn_rc, send_rc;
	tr_test_latch done;
};

static int parent_beh(void *state, tr_msg *m)
{
	struct parent *p = state;
	tr_ref counted_ref;

	if (tr_msg_type(m) != T_GO)
		return 0;
	p->self_before = tr_self();
	p->sys_seen = tr_self_system();
	p->spawn_rc = spawn_rec(p->sys_seen, &p->child_ir, &p->child_ref);
	p->self_after = tr_self();
	if (p->spawn_rc == TR_OK)
		p->spawn_rc = tr_spawn(p->sys_seen, counter_beh, &p->counted, &counted_ref);
	if (p->spawn_rc == TR_OK)
		p->send_rc = tr_send(counted_ref, T_DATA, NULL, 0);
	tr_test_latch_count_down(&p->done);
	return 0;
}

Test(actor, spawn_from_inside_an_actor)
{
	tr_system *sys = sys_start(2);
	struct parent p = { .spawn_rc = 1, .send_rc = 1 };
	tr_ref pr;

	p.counted.self_ptr = &p.counted;
	tr_test_latch_init(&p.counted.done, 1);
	tr_test_latch_init(&p.done, 1);
	pr = spawn(sys, parent_beh, &p);
	send_ok(pr, T_GO);
	cr_assert(tr_test_latch_wait(&p.done, WAIT_S));
	cr_assert_eq(p.spawn_rc, TR_OK, "%s", tr_err_name(p.spawn_rc));
	cr_assert_eq(p.send_rc, TR_OK, "%s", tr_err_name(p.send_rc));
	cr_assert(tr_test_latch_wait(&p.counted.done, WAIT_S), "child never ran");
	cr_assert_eq(p.sys_seen, sys);
	cr_assert(tr_ref_eq(p.self_before, pr));
	cr_assert_eq(p.child_ir.ran, 1);
	cr_assert(tr_ref_eq(p.child_ir.self, p.child_ref),
		  "child's init saw the wrong tr_self()");
	cr_assert(!tr_ref_eq(p.child_ref, pr));
	cr_assert(tr_ref_eq(p.self_after, pr), "tr_self() not restored after a nested spawn");
	sys_finish(&sys);
	cr_assert_eq(p.counted.n, 1);
}

/* ---- cleanup hook and stop reasons ---- */

Test(actor, cleanup_once_with_ok_on_stop)
{
	tr_system *sys = sys_start(2);
	tr_system *expect_sys = sys;
	struct life l;
	tr_ref r;

	life_init(&l, 0);
	r = spawn_life(sys, &l);
	cr_assert_eq(tr_stop(r), TR_OK);
	wait_cleaned(&l);
	sys_finish(&sys);
	cr_assert_eq(l.cleanups, 1);
	cr_assert_eq(l.reason, TR_OK, "reason %d", l.reason);
	cr_assert_eq(l.sys_in_cleanup, expect_sys,
		     "cleanup runs on one of the system's workers");
}

/*
 * The actor asks to stop (or fails) on its first message while two more wait
 * behind it; those two are never delivered and count as undelivered.
 */
static void check_stop_from_behaviour(uint32_t trigger, int arg, int want_reason)
{
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct life l;
	tr_stats st;
	tr_ref r;

	life_init(&l, 0);
	l.stop_reason = arg;
	l.fail_with = arg;
	r = spawn_life(sys, &l);
	blocker_hold(sys, &b);
	send_ok(r, trigger);
	send_ok(r, T_DATA);
	send_ok(r, T_DATA);
	blocker_release(&b);
	wait_cleaned(&l);
	st = sys_finish(&sys);

	cr_assert_eq(l.cleanups, 1);
	cr_assert_eq(l.reason, want_reason, "reason %d, want %d", l.reason, want_reason);
	cr_assert_eq(l.msgs, 0, "a message queued behind the stop was delivered");
	if (trigger == T_STOP_SELF)
		cr_assert_eq(l.stop_self_rc, TR_OK, "tr_stop_self: %d", l.stop_self_rc);
	cr_assert_eq(st.undelivered, 2);
	cr_assert_eq(st.dead_letters, 2);
	cr_assert_eq(st.delivered, 2, "T_BLOCK and the trigger");
}

Test(actor, stop_self_ok_is_normal_stop)
{
	check_stop_from_behaviour(T_STOP_SELF, TR_OK, TR_OK);
}

Test(actor, stop_self_passes_its_reason)
{
	check_stop_from_behaviour(T_STOP_SELF, -777, -777);
}

Test(actor, failure_reason_is_behaviour_return)
{
	check_stop_from_behaviour(T_FAIL, 7, 7);
}

Test(actor, failure_with_negative_code)
{
	check_stop_from_behaviour(T_FAIL, TR_EFAILED, TR_EFAILED);
}

static void check_shutdown_reason(tr_shutdown_mode mode)
{
	enum { N = 4 };
	tr_system *sys = sys_start(2);
	struct life l[N];

	for (int i = 0; i < N; i++) {
		life_init(&l[i], 1);
		send_ok(spawn_life(sys, &l[i]), T_DATA);
	}
	for (int i = 0; i < N; i++)
		cr_assert(tr_test_latch_wait(&l[i].got, WAIT_S));
	cr_assert_eq(tr_system_shutdown(sys, mode), TR_OK);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(l[i].cleanups, 1, "actor %d: %d cleanups", i, l[i].cleanups);
		cr_assert_eq(l[i].reason, TR_ESHUTDOWN, "actor %d: reason %d", i, l[i].reason);
	}
	tr_system_destroy(&sys);
	for (int i = 0; i < N; i++)
		cr_assert_eq(l[i].cleanups, 1, "destroy ran cleanup again");
}

Test(actor, cleanup_reason_on_graceful_shutdown)
{
	check_shutdown_reason(TR_SHUTDOWN_GRACEFUL);
}

Test(actor, cleanup_reason_on_immediate_shutdown)
{
	check_shutdown_reason(TR_SHUTDOWN_IMMEDIATE);
}

static int stop_in_init(void *state)
{
	struct life *l = state;

	l->stop_self_rc = tr_stop_self(TR_OK);
	return 0;
}

/* tr_stop_self is allowed in the init hook: the actor stops normally. */
Test(actor, stop_self_in_init)
{
	tr_system *sys = sys_start(1);
	struct life l;
	tr_actor_opts o = {
		.behaviour = life_beh,
		.state = &l,
		.init = stop_in_init,
		.cleanup = life_cleanup,
	};
	tr_ref r;

	life_init(&l, 0);
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	cr_assert_eq(l.stop_self_rc, TR_OK);
	sys_finish(&sys);
	cr_assert_eq(l.cleanups, 1);
	cr_assert_eq(l.reason, TR_OK, "reason %d: the stop requested in init was lost",
		     l.reason);
}

Test(actor, queued_messages_delivered_before_stop)
{
	enum { N = 1000 };
	tr_system *sys = sys_start(2);
	struct life l;
	tr_stats st;
	tr_ref r;

	life_init(&l, N);
	r = spawn_life(sys, &l);
	for (int i = 0; i < N; i++)
		send_ok(r, T_DATA);
	cr_assert_eq(tr_stop(r), TR_OK);
	/* After the stop request: accepted then dropped, or refused. */
	for (int i = 0; i < N; i++) {
		int rc = tr_send(r, T_DATA, NULL, 0);

		cr_assert(rc == TR_OK || rc == TR_EDEAD, "%s", tr_err_name(rc));
	}
	wait_cleaned(&l);
	st = sys_finish(&sys);
	cr_assert_eq(l.msgs_at_cleanup, N);
	cr_assert_eq(l.msgs, N, "a message sent after tr_stop was delivered");
	cr_assert_eq(l.reason, TR_OK);
	cr_assert_eq(st.delivered, N);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
}

/* ---- dead references ---- */

Test(actor, send_to_stopped_actor_is_dead_letter)
{
	enum { N = 5 };
	tr_system *sys = sys_start(2);
	struct life l;
	tr_stats st;
	tr_ref r;

	life_init(&l, 0);
	r = spawn_life(sys, &l);
	cr_assert_eq(tr_stop(r), TR_OK);
	wait_cleaned(&l);
	wait_dead(r);
	for (int i = 0; i < N; i++)
		cr_assert_eq(tr_send(r, T_DATA, "x", 1), TR_EDEAD);
	st = sys_finish(&sys);
	cr_assert_eq(l.msgs, 0);
	/* wait_dead's refusal plus ours; probes it got accepted are undelivered. */
	cr_assert_eq(st.dead_letters, st.undelivered + N + 1,
		     "dead_letters %llu, undelivered %llu",
		     (unsigned long long)st.dead_letters,
		     (unsigned long long)st.undelivered);
}

Test(actor, stop_of_dead_ref_is_edead_not_dead_letter)
{
	tr_system *sys = sys_start(2);
	struct life l;
	tr_stats st;
	tr_ref r;

	life_init(&l, 0);
	r = spawn_life(sys, &l);
	cr_assert_eq(tr_stop(r), TR_OK);
	wait_cleaned(&l);
	wait_dead(r);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(tr_stop(r), TR_EDEAD);
	st = sys_finish(&sys);
	cr_assert_eq(l.cleanups, 1);
	cr_assert_eq(st.dead_letters, st.undelivered + 1, "tr_stop counted a dead letter");
}

Test(actor, stop_errors)
{
	tr_system *sys = sys_new(1);
	struct life l;
	tr_ref r;

	life_init(&l, 1);
	r = spawn_life(sys, &l);
	cr_assert_eq(tr_stop(TR_REF_NONE), TR_EINVAL);
	/* a stop request before start is queued; user messages are refused */
	cr_assert_eq(tr_send(r, T_DATA, NULL, 0), TR_ENOTSTARTED);
	cr_assert_eq(tr_stop(r), TR_OK);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	cr_assert(tr_test_latch_wait(&l.cleaned, WAIT_S));
	cr_assert_eq(l.reason, TR_OK, "stopped by the queued request, not by shutdown");
	sys_finish(&sys);
}

/* ---- stale references after slot reuse ---- */

static atomic_uint trip_msgs, trip_cleanups, trip_bad_reason;

/* Young actors in reused slots: count what reaches them and how they end. */
static int trip_beh(void *state, tr_msg *m)
{
	if (tr_msg_type(m) == T_DATA) {
		atomic_fetch_add(&trip_msgs, 1);
		tr_test_latch_count_down(state);
	}
	return 0;
}

static void trip_cleanup(void *state, int reason)
{
	(void)state;
	atomic_fetch_add(&trip_cleanups, 1);
	if (reason != TR_ESHUTDOWN)
		atomic_fetch_add(&trip_bad_reason, 1);
}

static uint32_t slot_of(tr_ref r)
{
	return (uint32_t)(r.id & 0xffffffu); /* layout documented in troupe/ref.h */
}

/*
 * A reference to a slot's previous occupant must neither reach nor stop the
 * new one. Freed slots come back after a grace period, so the test spawns
 * until it has seen them reused, checking each old reference the moment its
 * slot has a new tenant, and all of them again at the end.
 */
Test(actor, stale_refs_after_slot_reuse)
{
	enum { OLD = 1000, YOUNG_MAX = 20000, SLOTS = 1 << 16, WANT_REUSE = 100 };
	static tr_ref old[OLD], young[YOUNG_MAX];
	static unsigned old_at[SLOTS]; /* 1 + index into old[] */
	tr_system *sys = sys_start(2);
	tr_test_latch got;
	unsigned nyoung = 0, reused = 0;
	double end;

	for (unsigned i = 0; i < OLD; i++) {
		old[i] = spawn(sys, idle_beh, NULL);
		cr_assert_lt(slot_of(old[i]), SLOTS);
		old_at[slot_of(old[i])] = i + 1;
	}
	for (unsigned i = 0; i < OLD; i++)
		cr_assert_eq(tr_stop(old[i]), TR_OK);
	for (unsigned i = 0; i < OLD; i++)
		wait_dead(old[i]);

	end = tr_test_now() + WAIT_S;
	while (reused < WANT_REUSE && nyoung < YOUNG_MAX && tr_test_now() < end) {
		tr_actor_opts o = {
			.behaviour = trip_beh,
			.state = &got,
			.cleanup = trip_cleanup,
		};
		tr_ref y;
		uint32_t slot;

		cr_assert_eq(tr_spawn_opts(sys, &o, &y), TR_OK);
		young[nyoung++] = y;
		slot = slot_of(y);
		if (slot < SLOTS && old_at[slot]) {
			tr_ref prev = old[old_at[slot] - 1];

			reused++;
			cr_assert(!tr_ref_eq(prev, y), "new tenant got the old reference");
			cr_assert_eq(tr_send(prev, T_DATA, NULL, 0), TR_EDEAD);
			cr_assert_eq(tr_stop(prev), TR_EDEAD);
		} else if (reused == 0) {
			sleep_ms(1); /* let the grace period pass */
		}
	}
	cr_log_info("%u young actors, %u in reused slots", nyoung, reused);
	cr_assert_gt(reused, 0, "no freed slot was reused in %u spawns", nyoung);

	for (unsigned i = 0; i < OLD; i++) {
		cr_assert_eq(tr_send(old[i], T_DATA, NULL, 0), TR_EDEAD);
		cr_assert_eq(tr_stop(old[i]), TR_EDEAD);
	}
	tr_test_latch_init(&got, nyoung);
	for (unsigned i = 0; i < nyoung; i++)
		send_ok(young[i], T_DATA);
	cr_assert(tr_test_latch_wait(&got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&trip_msgs), nyoung, "a stale reference reached a new actor");
	cr_assert_eq(atomic_load(&trip_cleanups), nyoung);
	cr_assert_eq(atomic_load(&trip_bad_reason), 0,
		     "a new actor was stopped through a stale reference");
}

/* ---- tr_self, tr_self_system, tr_stop_self outside actors ---- */

struct outside {
	tr_ref self;
	tr_system *sys;
	int stop_self_rc;
};

static void *outside_main(void *arg)
{
	struct outside *o = arg;

	o->self = tr_self();
	o->sys = tr_self_system();
	o->stop_self_rc = tr_stop_self(TR_OK);
	return NULL;
}

Test(actor, outside_actors_no_self)
{
	tr_system *sys = sys_start(1);
	struct outside o = { .self = { 1 }, .sys = sys };
	pthread_t th;

	cr_assert(tr_ref_is_none(tr_self()));
	cr_assert_null(tr_self_system());
	cr_assert_eq(tr_stop_self(TR_OK), TR_ENOTACTOR);
	cr_assert_eq(tr_stop_self(TR_EFAILED), TR_ENOTACTOR);

	cr_assert_eq(pthread_create(&th, NULL, outside_main, &o), 0);
	pthread_join(th, NULL);
	cr_assert(tr_ref_is_none(o.self));
	cr_assert_null(o.sys);
	cr_assert_eq(o.stop_self_rc, TR_ENOTACTOR);
	sys_finish(&sys);
}

struct inside {
	tr_ref self;
	tr_system *sys;
	tr_test_latch done;
};

static int inside_beh(void *state, tr_msg *m)
{
	struct inside *in = state;

	(void)m;
	in->self = tr_self();
	in->sys = tr_self_system();
	tr_test_latch_count_down(&in->done);
	return 0;
}

Test(actor, inside_actor_self_and_system)
{
	tr_system *sys = sys_start(2);
	struct inside a = { 0 }, b = { 0 };
	tr_ref ra, rb;

	tr_test_latch_init(&a.done, 1);
	tr_test_latch_init(&b.done, 1);
	ra = spawn(sys, inside_beh, &a);
	rb = spawn(sys, inside_beh, &b);
	send_ok(ra, T_DATA);
	send_ok(rb, T_DATA);
	cr_assert(tr_test_latch_wait(&a.done, WAIT_S));
	cr_assert(tr_test_latch_wait(&b.done, WAIT_S));
	cr_assert(tr_ref_eq(a.self, ra));
	cr_assert(tr_ref_eq(b.self, rb));
	cr_assert(!tr_ref_eq(ra, rb));
	cr_assert_eq(a.sys, sys);
	cr_assert_eq(b.sys, sys);
	sys_finish(&sys);
}

/* ---- one message at a time ---- */

struct excl {
	atomic_int inside;
	atomic_ulong overlaps;
	unsigned long n;     /* deliberately not atomic: the runtime serialises */
	unsigned long total;
	tr_test_latch done;
};

static int excl_beh(void *state, tr_msg *m)
{
	struct excl *e = state;
	unsigned long v;

	(void)m;
	if (atomic_fetch_add(&e->inside, 1) != 0)
		atomic_fetch_add(&e->overlaps, 1);
	v = e->n;
	/* Widen the read-modify-write window so overlapping runs lose updates. */
	for (volatile int i = 0; i < 50; i++)
		;
	e->n = v + 1;
	atomic_fetch_sub(&e->inside, 1);
	if (e->n == e->total)
		tr_test_latch_count_down(&e->done);
	return 0;
}

struct hammer {
	tr_ref to;
	unsigned n;
	int rc;
};

static int hammer_send(struct hammer *h)
{
	for (unsigned i = 0; i < h->n; i++) {
		int rc = tr_send(h->to, T_DATA, NULL, 0);

		if (rc != TR_OK)
			return rc;
	}
	return TR_OK;
}

static int hammer_beh(void *state, tr_msg *m)
{
	(void)m;
	((struct hammer *)state)->rc = hammer_send(state);
	return 0;
}

static void *hammer_main(void *arg)
{
	((struct hammer *)arg)->rc = hammer_send(arg);
	return NULL;
}

/* Many senders, threads and actors on every worker, one counter. */
Test(actor, one_message_at_a_time)
{
	enum { THREADS = 2, ACTORS = 4, PER = 10000 };
	tr_system *sys = sys_start(2);
	struct excl e = { .total = (unsigned long)(THREADS + ACTORS) * PER };
	struct hammer h[THREADS + ACTORS];
	pthread_t th[THREADS];
	tr_ref to;

	tr_test_latch_init(&e.done, 1);
	to = spawn(sys, excl_beh, &e);
	for (int i = 0; i < THREADS + ACTORS; i++)
		h[i] = (struct hammer){ .to = to, .n = PER, .rc = 1 };
	for (int i = 0; i < ACTORS; i++)
		send_ok(spawn(sys, hammer_beh, &h[THREADS + i]), T_GO);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	cr_assert(tr_test_latch_wait(&e.done, WAIT_S), "%lu of %lu counted",
		  e.n, e.total);
	sys_finish(&sys);
	for (int i = 0; i < THREADS + ACTORS; i++)
		cr_assert_eq(h[i].rc, TR_OK, "sender %d: %s", i, tr_err_name(h[i].rc));
	cr_assert_eq(atomic_load(&e.overlaps), 0, "%lu overlapping runs",
		     atomic_load(&e.overlaps));
	cr_assert_eq(e.n, e.total);
}

/* ---- argument checks ---- */

Test(actor, bad_arguments_are_einval)
{
	tr_system *sys = sys_start(1);
	tr_actor_opts o = { .behaviour = idle_beh };
	tr_ref r;
	tr_stats st;

	cr_assert_eq(tr_spawn(NULL, idle_beh, NULL, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn(sys, NULL, NULL, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn(sys, idle_beh, NULL, NULL), TR_EINVAL);
	cr_assert_eq(tr_spawn_opts(NULL, &o, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_opts(sys, NULL, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_opts(sys, &o, NULL), TR_EINVAL);
	o.behaviour = NULL;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_EINVAL);
	o.behaviour = idle_beh;
	o.mailbox_capacity = (1u << 31) + 1;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_EINVAL);
	o.mailbox_capacity = UINT32_MAX - 1;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_EINVAL);
	cr_assert_eq(tr_stop(TR_REF_NONE), TR_EINVAL);

	/* The limits themselves are fine. */
	o.mailbox_capacity = 1u << 31;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	o.mailbox_capacity = TR_MAILBOX_UNBOUNDED;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	st = sys_finish(&sys);
	cr_assert_eq(st.spawned, 2, "a refused spawn was counted");
}

/* ---- pinning ---- */

struct pinned {
	_Atomic unsigned msgs;
	_Atomic unsigned elsewhere; /* messages handled off the home worker */
	int home;
	tr_test_latch done;
};

static int pinned_beh(void *state, tr_msg *m)
{
	struct pinned *p = state;

	(void)m;
	if (tr_self_worker() != p->home)
		atomic_fetch_add(&p->elsewhere, 1);
	atomic_fetch_add(&p->msgs, 1);
	tr_test_latch_count_down(&p->done);
	return 0;
}

/* A pinned actor runs only on its worker, whoever sends to it, even while
 * the other worker is idle and looking for work to steal. */
Test(actor, pinned_actor_runs_only_on_its_worker)
{
	tr_system *sys = sys_start(2);
	struct pinned p[2];
	tr_actor_opts o = { .behaviour = pinned_beh };
	tr_ref r[2];

	for (int k = 0; k < 2; k++) {
		memset(&p[k], 0, sizeof(p[k]));
		p[k].home = k;
		tr_test_latch_init(&p[k].done, 2000);
		o.state = &p[k];
		o.worker = (unsigned)k + 1;
		cr_assert_eq(tr_spawn_opts(sys, &o, &r[k]), TR_OK);
	}
	for (int i = 0; i < 2000; i++)
		for (int k = 0; k < 2; k++)
			send_ok(r[k], T_DATA);
	for (int k = 0; k < 2; k++) {
		cr_assert(tr_test_latch_wait(&p[k].done, WAIT_S));
		cr_assert_eq(atomic_load(&p[k].elsewhere), 0, "actor pinned to worker %d ran elsewhere", k);
	}
	cr_assert_eq(tr_self_worker(), -1, "the test thread is no worker");
	o.worker = 3;
	cr_assert_eq(tr_spawn_opts(sys, &o, &r[0]), TR_EINVAL, "only 2 workers");
	sys_finish(&sys);
}
