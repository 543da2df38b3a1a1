/*
 * Unit tests for troupe/monitor.h: monitors and their DOWN notifications
 * (every stop reason, dead targets, twice, demonitor), links (failure
 * propagation with the reason, normal stops that do not propagate,
 * trap_exit, dead targets, unlink), tr_kill and the error paths.
 *
 * Every actor here is a "peer": it runs commands the test sends it
 * (monitor, link, trap, fail, ...), answers each through a latch with the
 * call's return value, and records the DOWN / EXIT messages it gets and its
 * cleanup reason. Where the test needs to show that something does NOT
 * happen, it checks after a graceful shutdown, which delivers everything
 * accepted before it.
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

TestSuite(monitor, .timeout = 120);
TestSuite(link, .timeout = 120);
TestSuite(kill, .timeout = 120);

enum { T_CMD = 0x600, T_DATA };

enum op {
	OP_NOP,
	OP_MONITOR,
	OP_DEMONITOR,
	OP_LINK,
	OP_UNLINK,
	OP_TRAP,
	OP_STOP_SELF, /* tr_stop_self(arg) */
	OP_FAIL,      /* return arg from the behaviour */
	OP_BLOCK,     /* answer at once, then wait on `hold` */
	OP_BLOCK_FAIL, /* OP_BLOCK, then return arg */
	OP_ERRORS,    /* the in-actor argument errors */
};

/* ---- systems ---- */

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

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
	cr_assert_null(*sys);
	return st;
}

/* ---- peer ---- */

#define MAXN 16

struct note {
	uint32_t type;
	tr_down d;
	bool has_down;
};

struct peer {
	tr_ref self;
	struct note notes[MAXN]; /* DOWN / EXIT messages, in order */
	atomic_uint nnotes;
	atomic_uint data;        /* T_DATA handled */
	atomic_uint handled;     /* every message handled */
	atomic_int cleanups;
	int reason;
	int errs[8];
	tr_test_latch hold;      /* OP_BLOCK waits here */
	tr_test_latch got;       /* one count per DOWN / EXIT */
	tr_test_latch cleaned;
};

struct cmd {
	int op;
	tr_ref target;
	int arg;
	int rc;
	tr_test_latch *ack;
};

static int peer_beh(void *state, tr_msg *m)
{
	struct peer *p = state;
	struct cmd *c;
	int ret = 0;

	atomic_fetch_add(&p->handled, 1);
	if (tr_msg_type(m) == TR_MSG_DOWN || tr_msg_type(m) == TR_MSG_EXIT) {
		unsigned n = atomic_load(&p->nnotes);

		if (n < MAXN) {
			const tr_down *d = tr_msg_down(m);

			p->notes[n].type = tr_msg_type(m);
			p->notes[n].has_down = d != NULL;
			if (d)
				p->notes[n].d = *d;
		}
		atomic_store(&p->nnotes, n + 1);
		tr_test_latch_count_down(&p->got);
		return 0;
	}
	if (tr_msg_type(m) == T_DATA) {
		atomic_fetch_add(&p->data, 1);
		return 0;
	}
	if (tr_msg_type(m) != T_CMD)
		return 0;
	memcpy(&c, tr_msg_data(m), sizeof(c));
	switch (c->op) {
	case OP_NOP:
		c->rc = TR_OK;
		break;
	case OP_MONITOR:
		c->rc = tr_monitor(c->target);
		break;
	case OP_DEMONITOR:
		c->rc = tr_demonitor(c->target);
		break;
	case OP_LINK:
		c->rc = tr_link(c->target);
		break;
	case OP_UNLINK:
		c->rc = tr_unlink(c->target);
		break;
	case OP_TRAP:
		c->rc = tr_trap_exit(c->arg != 0);
		break;
	case OP_STOP_SELF:
		c->rc = tr_stop_self(c->arg);
		break;
	case OP_FAIL:
		c->rc = TR_OK;
		ret = c->arg;
		break;
	case OP_BLOCK:
	case OP_BLOCK_FAIL:
		ret = c->op == OP_BLOCK_FAIL ? c->arg : 0;
		c->rc = TR_OK;
		tr_test_latch_count_down(c->ack);
		tr_test_latch_wait(&p->hold, WAIT_S);
		return ret;
	case OP_ERRORS:
		p->errs[0] = tr_monitor(TR_REF_NONE);
		p->errs[1] = tr_monitor(tr_self());
		p->errs[2] = tr_link(TR_REF_NONE);
		p->errs[3] = tr_link(tr_self());
		p->errs[4] = tr_demonitor(TR_REF_NONE);
		p->errs[5] = tr_unlink(TR_REF_NONE);
		p->errs[6] = tr_kill(TR_REF_NONE);
		c->rc = TR_OK;
		break;
	}
	tr_test_latch_count_down(c->ack);
	return ret;
}

static void peer_cleanup(void *state, int reason)
{
	struct peer *p = state;

	p->reason = reason;
	atomic_fetch_add(&p->cleanups, 1);
	tr_test_latch_count_down(&p->cleaned);
}

static tr_ref peer_spawn_opts(tr_system *sys, struct peer *p, uint64_t expect_notes,
			      uint32_t capacity)
{
	tr_actor_opts o = { .behaviour = peer_beh, .state = p, .cleanup = peer_cleanup,
			    .mailbox_capacity = capacity, .overflow = TR_OVERFLOW_REJECT };

	memset(p, 0, sizeof(*p));
	p->reason = 12345;
	tr_test_latch_init(&p->hold, 1);
	tr_test_latch_init(&p->got, expect_notes);
	tr_test_latch_init(&p->cleaned, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &p->self), TR_OK);
	return p->self;
}

static tr_ref peer_spawn(tr_system *sys, struct peer *p, uint64_t expect_notes)
{
	return peer_spawn_opts(sys, p, expect_notes, 0);
}

/* Runs a command in peer `p` and returns its result. */
static int cmd(struct peer *p, int op, tr_ref target, int arg)
{
	tr_test_latch ack;
	struct cmd c = { .op = op, .target = target, .arg = arg, .rc = 12345, .ack = &ack };
	struct cmd *cp = &c;
	int rc;

	tr_test_latch_init(&ack, 1);
	rc = tr_send(p->self, T_CMD, &cp, sizeof(cp));
	cr_assert_eq(rc, TR_OK, "sending command %d: %s", op, tr_err_name(rc));
	cr_assert(tr_test_latch_wait(&ack, WAIT_S), "command %d never ran", op);
	tr_test_latch_destroy(&ack);
	return c.rc;
}

static void cmd_ok(struct peer *p, int op, tr_ref target, int arg)
{
	int rc = cmd(p, op, target, arg);

	cr_assert_eq(rc, TR_OK, "command %d: %s", op, tr_err_name(rc));
}

static void wait_cleaned(struct peer *p)
{
	cr_assert(tr_test_latch_wait(&p->cleaned, WAIT_S), "actor never stopped");
}

static void wait_notes(struct peer *p)
{
	cr_assert(tr_test_latch_wait(&p->got, WAIT_S), "only %u notifications",
		  atomic_load(&p->nnotes));
}

static void expect_note(const struct peer *p, unsigned i, uint32_t type, tr_ref who, int reason)
{
	const struct note *n = &p->notes[i];

	cr_assert_gt(atomic_load(&p->nnotes), i);
	cr_assert_eq(n->type, type, "notification %u: type %#x, want %#x", i, n->type, type);
	cr_assert(n->has_down, "tr_msg_down() NULL for a DOWN/EXIT message");
	cr_assert(tr_ref_eq(n->d.who, who), "notification %u names another actor", i);
	cr_assert_eq(n->d.reason, reason, "notification %u: reason %s (%d), want %s (%d)", i,
		     tr_err_name(n->d.reason), n->d.reason, tr_err_name(reason), reason);
}

static void expect_alive(struct peer *p)
{
	cmd_ok(p, OP_NOP, TR_REF_NONE, 0);
	cr_assert_eq(atomic_load(&p->cleanups), 0, "actor stopped");
}

static void expect_reason(const struct peer *p, int want)
{
	cr_assert_eq(atomic_load(&p->cleanups), 1);
	cr_assert_eq(p->reason, want, "cleanup reason %s (%d), want %s (%d)",
		     tr_err_name(p->reason), p->reason, tr_err_name(want), want);
}

/* ------------------------------------------------------------ monitors */

static void down_case(int how, int arg, int want)
{
	tr_system *sys = sys_start(2);
	struct peer w, t;

	peer_spawn(sys, &w, 1);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	switch (how) {
	case 0:
		cr_assert_eq(tr_stop(t.self), TR_OK);
		break;
	case 1:
		cmd_ok(&t, OP_FAIL, TR_REF_NONE, arg);
		break;
	case 2:
		cmd_ok(&t, OP_STOP_SELF, TR_REF_NONE, arg);
		break;
	case 3:
		cr_assert_eq(tr_kill(t.self), TR_OK);
		break;
	}
	wait_cleaned(&t);
	expect_reason(&t, want);
	wait_notes(&w);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, want);
	expect_alive(&w);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&w.nnotes), 1, "%u DOWN messages for one monitor",
		     atomic_load(&w.nnotes));
}

Test(monitor, down_on_normal_stop)
{
	down_case(0, 0, TR_OK);
}

Test(monitor, down_on_failure)
{
	down_case(1, 77, 77);
}

Test(monitor, down_on_stop_self_reason)
{
	down_case(2, 55, 55);
}

Test(monitor, down_on_kill)
{
	down_case(3, 0, TR_EKILLED);
}

Test(monitor, dead_target_is_down_at_once)
{
	tr_system *sys = sys_start(2);
	struct peer w, t;

	peer_spawn(sys, &w, 1);
	peer_spawn(sys, &t, 0);
	cr_assert_eq(tr_stop(t.self), TR_OK);
	wait_cleaned(&t);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	wait_notes(&w);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, TR_EDEAD);
	expect_alive(&w);
	sys_finish(&sys);
}

Test(monitor, twice_gives_two_downs_and_many_watchers_each_get_one)
{
	tr_system *sys = sys_start(2);
	struct peer w, w2, t;

	peer_spawn(sys, &w, 2);
	peer_spawn(sys, &w2, 1);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&w2, OP_MONITOR, t.self, 0);
	cmd_ok(&t, OP_FAIL, TR_REF_NONE, 9);
	wait_notes(&w);
	wait_notes(&w2);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, 9);
	expect_note(&w, 1, TR_MSG_DOWN, t.self, 9);
	expect_note(&w2, 0, TR_MSG_DOWN, t.self, 9);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&w.nnotes), 2);
	cr_assert_eq(atomic_load(&w2.nnotes), 1);
}

Test(monitor, demonitor_drops_one_monitor)
{
	tr_system *sys = sys_start(2);
	struct peer w, w2, t;

	peer_spawn(sys, &w, 1);
	peer_spawn(sys, &w2, 0);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&w, OP_DEMONITOR, t.self, 0);
	cmd_ok(&w2, OP_MONITOR, t.self, 0);
	cmd_ok(&w2, OP_DEMONITOR, t.self, 0);
	cr_assert_eq(tr_stop(t.self), TR_OK);
	wait_cleaned(&t);
	wait_notes(&w);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, TR_OK);
	sleep_ms(20);
	expect_alive(&w);
	expect_alive(&w2);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&w.nnotes), 1, "monitored twice, demonitored once: %u DOWN",
		     atomic_load(&w.nnotes));
	cr_assert_eq(atomic_load(&w2.nnotes), 0, "DOWN after demonitor");
}

/* Notifications are runtime messages: a full bounded mailbox takes them. */
Test(monitor, down_bypasses_mailbox_bound)
{
	tr_system *sys = sys_start(2);
	struct peer w, t;
	tr_test_latch ack;
	struct cmd c = { .op = OP_BLOCK, .ack = &ack };
	struct cmd *cp = &c;

	peer_spawn_opts(sys, &w, 1, 1);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	tr_test_latch_init(&ack, 1);
	cr_assert_eq(tr_send(w.self, T_CMD, &cp, sizeof(cp)), TR_OK);
	cr_assert(tr_test_latch_wait(&ack, WAIT_S));
	cr_assert_eq(tr_send(w.self, T_DATA, NULL, 0), TR_OK);
	cr_assert_eq(tr_send(w.self, T_DATA, NULL, 0), TR_EFULL, "mailbox should be full");
	cr_assert_eq(tr_stop(t.self), TR_OK);
	wait_cleaned(&t);
	tr_test_latch_count_down(&w.hold);
	wait_notes(&w);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, TR_OK);
	sys_finish(&sys);
	tr_test_latch_destroy(&ack);
}

/* At shutdown every actor stops with TR_ESHUTDOWN; a DOWN that still gets
 * through carries that reason (delivery itself is not guaranteed: the
 * watcher may stop first). */
Test(monitor, shutdown_reason)
{
	tr_system *sys = sys_start(2);
	struct peer w, t;

	peer_spawn(sys, &w, 0);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	sys_finish(&sys);
	expect_reason(&w, TR_ESHUTDOWN);
	expect_reason(&t, TR_ESHUTDOWN);
	cr_assert_leq(atomic_load(&w.nnotes), 1);
	if (atomic_load(&w.nnotes))
		expect_note(&w, 0, TR_MSG_DOWN, t.self, TR_ESHUTDOWN);
}

static int plain_beh(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

Test(monitor, msg_down_is_null_for_other_messages)
{
	tr_msg m;

	memset(&m, 0, sizeof(m));
	m.type = T_DATA;
	cr_assert_null(tr_msg_down(&m));
	m.type = TR_MSG_DOWN;
	cr_assert_not_null(tr_msg_down(&m));
	m.type = TR_MSG_EXIT;
	cr_assert_not_null(tr_msg_down(&m));
}

Test(monitor, errors)
{
	tr_system *sys = sys_start(1);
	struct peer p;
	tr_ref other;

	peer_spawn(sys, &p, 0);
	cr_assert_eq(tr_spawn(sys, plain_beh, NULL, &other), TR_OK);
	/* outside an actor */
	cr_assert_eq(tr_monitor(other), TR_ENOTACTOR);
	cr_assert_eq(tr_demonitor(other), TR_ENOTACTOR);
	cr_assert_eq(tr_link(other), TR_ENOTACTOR);
	cr_assert_eq(tr_unlink(other), TR_ENOTACTOR);
	cr_assert_eq(tr_trap_exit(true), TR_ENOTACTOR);
	/* inside */
	cmd_ok(&p, OP_ERRORS, TR_REF_NONE, 0);
	cr_assert_eq(p.errs[0], TR_EINVAL, "monitor(NONE): %s", tr_err_name(p.errs[0]));
	cr_assert_eq(p.errs[1], TR_EINVAL, "monitor(self): %s", tr_err_name(p.errs[1]));
	cr_assert_eq(p.errs[2], TR_EINVAL, "link(NONE): %s", tr_err_name(p.errs[2]));
	cr_assert_eq(p.errs[3], TR_EINVAL, "link(self): %s", tr_err_name(p.errs[3]));
	cr_assert_eq(p.errs[4], TR_EINVAL, "demonitor(NONE): %s", tr_err_name(p.errs[4]));
	cr_assert_eq(p.errs[5], TR_EINVAL, "unlink(NONE): %s", tr_err_name(p.errs[5]));
	cr_assert_eq(p.errs[6], TR_EINVAL, "kill(NONE): %s", tr_err_name(p.errs[6]));
	expect_alive(&p);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&p.nnotes), 0);
	expect_reason(&p, TR_ESHUTDOWN);
}

/* ------------------------------------------------------------ links */

/* `a` links to `b`; `failing` (a or b) fails with 77: both stop with 77. */
static void link_failure_case(bool fail_linker)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, w;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &w, 2);
	cmd_ok(&w, OP_MONITOR, a.self, 0);
	cmd_ok(&w, OP_MONITOR, b.self, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(fail_linker ? &a : &b, OP_FAIL, TR_REF_NONE, 77);
	wait_cleaned(&a);
	wait_cleaned(&b);
	expect_reason(&a, 77);
	expect_reason(&b, 77);
	wait_notes(&w);
	/* the watcher hears both stops with the shared reason, in either order */
	for (unsigned i = 0; i < 2; i++)
		cr_assert_eq(w.notes[i].d.reason, 77);
	cr_assert(!tr_ref_eq(w.notes[0].d.who, w.notes[1].d.who));
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&a.nnotes) + atomic_load(&b.nnotes), 0,
		     "non-trapping linked actors got EXIT messages");
}

Test(link, failure_propagates_from_target)
{
	link_failure_case(false);
}

Test(link, failure_propagates_from_linker)
{
	link_failure_case(true);
}

Test(link, chain_propagates)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, c;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &c, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&b, OP_LINK, c.self, 0);
	cmd_ok(&c, OP_STOP_SELF, TR_REF_NONE, 9);
	wait_cleaned(&a);
	wait_cleaned(&b);
	wait_cleaned(&c);
	expect_reason(&c, 9);
	expect_reason(&b, 9);
	expect_reason(&a, 9);
	sys_finish(&sys);
}

Test(link, kill_propagates_as_ekilled)
{
	tr_system *sys = sys_start(2);
	struct peer a, b;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cr_assert_eq(tr_kill(b.self), TR_OK);
	wait_cleaned(&a);
	wait_cleaned(&b);
	expect_reason(&b, TR_EKILLED);
	expect_reason(&a, TR_EKILLED);
	sys_finish(&sys);
}

Test(link, normal_stop_does_not_propagate)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, c;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &c, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&a, OP_LINK, c.self, 0);
	cr_assert_eq(tr_stop(b.self), TR_OK);                /* from outside */
	cmd_ok(&c, OP_STOP_SELF, TR_REF_NONE, TR_OK);        /* from inside */
	wait_cleaned(&b);
	wait_cleaned(&c);
	expect_reason(&b, TR_OK);
	expect_reason(&c, TR_OK);
	sleep_ms(20);
	expect_alive(&a);
	sys_finish(&sys);
	expect_reason(&a, TR_ESHUTDOWN);
}

Test(link, trap_exit_turns_signal_into_message)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, c;

	peer_spawn(sys, &a, 1);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &c, 0);
	cmd_ok(&a, OP_TRAP, TR_REF_NONE, 1);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&b, OP_FAIL, TR_REF_NONE, 77);
	wait_cleaned(&b);
	wait_notes(&a);
	expect_note(&a, 0, TR_MSG_EXIT, b.self, 77);
	expect_alive(&a);
	/* trapping off again: the next exit signal stops it */
	cmd_ok(&a, OP_TRAP, TR_REF_NONE, 0);
	cmd_ok(&a, OP_LINK, c.self, 0);
	cmd_ok(&c, OP_FAIL, TR_REF_NONE, 78);
	wait_cleaned(&a);
	expect_reason(&a, 78);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&a.nnotes), 1);
}

Test(link, to_dead_actor_stops_caller_with_edead)
{
	tr_system *sys = sys_start(2);
	struct peer a, d;
	int rc;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &d, 0);
	cr_assert_eq(tr_stop(d.self), TR_OK);
	wait_cleaned(&d);
	rc = cmd(&a, OP_LINK, d.self, 0);
	cr_assert_eq(rc, TR_OK, "tr_link to a dead actor: %s", tr_err_name(rc));
	wait_cleaned(&a);
	expect_reason(&a, TR_EDEAD);
	sys_finish(&sys);
}

Test(link, to_dead_actor_while_trapping_is_exit_message)
{
	tr_system *sys = sys_start(2);
	struct peer a, d;

	peer_spawn(sys, &a, 1);
	peer_spawn(sys, &d, 0);
	cr_assert_eq(tr_stop(d.self), TR_OK);
	wait_cleaned(&d);
	cmd_ok(&a, OP_TRAP, TR_REF_NONE, 1);
	cmd_ok(&a, OP_LINK, d.self, 0);
	wait_notes(&a);
	expect_note(&a, 0, TR_MSG_EXIT, d.self, TR_EDEAD);
	expect_alive(&a);
	sys_finish(&sys);
}

Test(link, unlink_removes_both_sides)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, c, d;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &c, 0);
	peer_spawn(sys, &d, 0);
	/* a unlinks, b fails: a lives */
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&a, OP_UNLINK, b.self, 0);
	cmd_ok(&b, OP_FAIL, TR_REF_NONE, 5);
	wait_cleaned(&b);
	/* c links, d unlinks from its side, c fails: d lives */
	cmd_ok(&c, OP_LINK, d.self, 0);
	cmd_ok(&d, OP_UNLINK, c.self, 0);
	cmd_ok(&c, OP_FAIL, TR_REF_NONE, 6);
	wait_cleaned(&c);
	sleep_ms(20);
	expect_alive(&a);
	expect_alive(&d);
	sys_finish(&sys);
	expect_reason(&a, TR_ESHUTDOWN);
	expect_reason(&d, TR_ESHUTDOWN);
}

/*
 * Once tr_unlink returned, the link no longer affects the caller: here the
 * partner fails while the unlink request still waits in its mailbox (it is
 * busy in a behaviour that then fails). The caller must survive.
 */
Test(link, unlink_wins_over_partner_failing_before_seeing_it)
{
	tr_system *sys = sys_start(2);
	struct peer a, b;
	tr_test_latch ack;
	struct cmd c = { .op = OP_BLOCK_FAIL, .arg = 5, .ack = &ack };
	struct cmd *cp = &c;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&b, OP_NOP, TR_REF_NONE, 0); /* b has taken the link */
	tr_test_latch_init(&ack, 1);
	cr_assert_eq(tr_send(b.self, T_CMD, &cp, sizeof(cp)), TR_OK);
	cr_assert(tr_test_latch_wait(&ack, WAIT_S));
	cmd_ok(&a, OP_UNLINK, b.self, 0);
	tr_test_latch_count_down(&b.hold); /* b fails with 5 */
	wait_cleaned(&b);
	expect_reason(&b, 5);
	sleep_ms(20);
	cr_assert_eq(atomic_load(&a.cleanups), 0, "unlinked actor stopped with %s (%d)",
		     tr_err_name(a.reason), a.reason);
	expect_alive(&a);
	sys_finish(&sys);
	tr_test_latch_destroy(&ack);
}

/* tr_link is idempotent: linking twice and unlinking once leaves no link. */
Test(link, link_is_idempotent)
{
	tr_system *sys = sys_start(2);
	struct peer a, b;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&b, OP_LINK, a.self, 0);
	cmd_ok(&a, OP_UNLINK, b.self, 0);
	cmd_ok(&b, OP_FAIL, TR_REF_NONE, 5);
	wait_cleaned(&b);
	sleep_ms(20);
	expect_alive(&a);
	sys_finish(&sys);
	expect_reason(&a, TR_ESHUTDOWN);
}

/* At shutdown linked actors stop with TR_ESHUTDOWN, whatever reaches whom. */
Test(link, shutdown_reason)
{
	tr_system *sys = sys_start(2);
	struct peer a, b, c;

	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &b, 0);
	peer_spawn(sys, &c, 0);
	cmd_ok(&a, OP_LINK, b.self, 0);
	cmd_ok(&c, OP_TRAP, TR_REF_NONE, 1);
	cmd_ok(&c, OP_LINK, a.self, 0);
	sys_finish(&sys);
	expect_reason(&a, TR_ESHUTDOWN);
	expect_reason(&b, TR_ESHUTDOWN);
	expect_reason(&c, TR_ESHUTDOWN);
	for (unsigned i = 0; i < atomic_load(&c.nnotes) && i < MAXN; i++)
		cr_assert_eq(c.notes[i].d.reason, TR_ESHUTDOWN);
}

/* Notifications to a watcher or linked actor that is already gone vanish
 * quietly: no dead letters, no crash. */
Test(link, notifications_to_gone_actors_are_not_dead_letters)
{
	tr_system *sys = sys_start(2);
	struct peer w, a, t;
	tr_stats st;

	peer_spawn(sys, &w, 0);
	peer_spawn(sys, &a, 0);
	peer_spawn(sys, &t, 0);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&a, OP_TRAP, TR_REF_NONE, 1);
	cmd_ok(&a, OP_LINK, t.self, 0);
	cmd_ok(&w, OP_STOP_SELF, TR_REF_NONE, TR_OK);
	cmd_ok(&a, OP_STOP_SELF, TR_REF_NONE, TR_OK);
	wait_cleaned(&w);
	wait_cleaned(&a);
	expect_reason(&a, TR_OK);
	cmd_ok(&t, OP_FAIL, TR_REF_NONE, 3);
	wait_cleaned(&t);
	sleep_ms(20);
	st = sys_finish(&sys);
	cr_assert_eq(st.dead_letters, 0, "%llu dead letters", (unsigned long long)st.dead_letters);
	cr_assert_eq(atomic_load(&w.nnotes), 0);
	cr_assert_eq(atomic_load(&a.nnotes), 0);
}

/* ------------------------------------------------------------ kill */

/* Parks the only worker in a blocker peer while messages queue up. */
Test(kill, skips_queued_messages)
{
	enum { K = 5 };
	tr_system *sys = sys_start(1);
	struct peer blk, t, w;
	tr_test_latch ack;
	struct cmd c = { .op = OP_BLOCK, .ack = &ack };
	struct cmd *cp = &c;
	tr_stats st;

	peer_spawn(sys, &blk, 0);
	peer_spawn(sys, &t, 0);
	peer_spawn(sys, &w, 1);
	cmd_ok(&w, OP_MONITOR, t.self, 0);
	cmd_ok(&t, OP_TRAP, TR_REF_NONE, 1); /* trapping does not help against kill */
	tr_test_latch_init(&ack, 1);
	cr_assert_eq(tr_send(blk.self, T_CMD, &cp, sizeof(cp)), TR_OK);
	cr_assert(tr_test_latch_wait(&ack, WAIT_S));
	for (int i = 0; i < K; i++)
		cr_assert_eq(tr_send(t.self, T_DATA, NULL, 0), TR_OK);
	cr_assert_eq(tr_kill(t.self), TR_OK);
	tr_test_latch_count_down(&blk.hold);
	wait_cleaned(&t);
	expect_reason(&t, TR_EKILLED);
	cr_assert_eq(atomic_load(&t.data), 0, "a killed actor handled %u queued messages",
		     atomic_load(&t.data));
	wait_notes(&w);
	expect_note(&w, 0, TR_MSG_DOWN, t.self, TR_EKILLED);
	cr_assert_eq(tr_kill(t.self), TR_EDEAD, "kill of a dead actor");
	st = sys_finish(&sys);
	cr_assert_eq(st.undelivered, K, "undelivered %llu, want %d",
		     (unsigned long long)st.undelivered, K);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
	tr_test_latch_destroy(&ack);
}

/* Killed while handling a message: stops right after it, skipping the rest. */
Test(kill, while_busy_stops_after_current_message)
{
	enum { K = 3 };
	tr_system *sys = sys_start(2);
	struct peer t;
	tr_test_latch ack;
	struct cmd c = { .op = OP_BLOCK, .ack = &ack };
	struct cmd *cp = &c;

	peer_spawn(sys, &t, 0);
	tr_test_latch_init(&ack, 1);
	cr_assert_eq(tr_send(t.self, T_CMD, &cp, sizeof(cp)), TR_OK);
	cr_assert(tr_test_latch_wait(&ack, WAIT_S));
	for (int i = 0; i < K; i++)
		cr_assert_eq(tr_send(t.self, T_DATA, NULL, 0), TR_OK);
	cr_assert_eq(tr_kill(t.self), TR_OK);
	tr_test_latch_count_down(&t.hold);
	wait_cleaned(&t);
	expect_reason(&t, TR_EKILLED);
	cr_assert_eq(atomic_load(&t.data), 0);
	sys_finish(&sys);
	tr_test_latch_destroy(&ack);
}

/* An actor can kill another; the linked trapping side hears TR_EKILLED. */
struct killer {
	tr_ref victim;
	int rc;
	tr_test_latch done;
};

static int killer_beh(void *state, tr_msg *m)
{
	struct killer *k = state;

	(void)m;
	k->rc = tr_kill(k->victim);
	tr_test_latch_count_down(&k->done);
	return 0;
}

Test(kill, from_an_actor_and_exit_to_trapping_link)
{
	tr_system *sys = sys_start(2);
	struct peer t, a;
	struct killer k = { .rc = 12345 };
	tr_ref kr;

	peer_spawn(sys, &t, 0);
	peer_spawn(sys, &a, 1);
	cmd_ok(&a, OP_TRAP, TR_REF_NONE, 1);
	cmd_ok(&a, OP_LINK, t.self, 0);
	k.victim = t.self;
	tr_test_latch_init(&k.done, 1);
	cr_assert_eq(tr_spawn(sys, killer_beh, &k, &kr), TR_OK);
	cr_assert_eq(tr_send(kr, T_DATA, NULL, 0), TR_OK);
	cr_assert(tr_test_latch_wait(&k.done, WAIT_S));
	cr_assert_eq(k.rc, TR_OK);
	wait_cleaned(&t);
	expect_reason(&t, TR_EKILLED);
	wait_notes(&a);
	expect_note(&a, 0, TR_MSG_EXIT, t.self, TR_EKILLED);
	expect_alive(&a);
	sys_finish(&sys);
}

Test(kill, errors)
{
	tr_config cfg;
	tr_system *sys = NULL;
	tr_ref r;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = 1;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	cr_assert_eq(tr_spawn(sys, plain_beh, NULL, &r), TR_OK);
	cr_assert_eq(tr_kill(TR_REF_NONE), TR_EINVAL);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_kill(r), TR_ESHUTDOWN);
	tr_system_destroy(&sys);
	cr_assert_eq(tr_kill(r), TR_EDEAD);
}
