/*
 * Unit tests for troupe/supervisor.h: the three strategies with a crashing
 * child, restart types, restart intensity and giving up, start functions
 * that fail, nested supervisors escalating, the counters, stopping the
 * supervisor, and argument errors.
 *
 * Children are "kids": a kid counts T_INC messages in fresh state, reports
 * that count and its incarnation on T_PROBE, fails on T_CRASH, and stops
 * normally on T_EXIT_OK. Each child spec has a struct kid_spec that counts
 * its starts, so a test can tell a restarted child (new incarnation, count
 * back to 0) from one that kept running. The supervisor itself is watched
 * by a "watcher" actor that monitors it and records the reason it stopped.
 *
 * Nothing asserts on timings: every wait polls a condition under a generous
 * deadline that only catches hangs.
 */
#include <criterion/criterion.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "support.h"

#define WAIT_S 30

TestSuite(supervisor, .timeout = 120);

enum {
	T_INC = 0x300,
	T_PROBE,
	T_CRASH,
	T_EXIT_OK,
	T_WATCH,
	T_OTHER,
};

#define CRASH_RC TR_EFAILED

/* ---- helpers ---- */

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Polls `cond` until it holds; fails the test after WAIT_S seconds. */
#define WAIT_FOR(cond)                                                         \
	do {                                                                   \
		double end_ = tr_test_now() + WAIT_S;                          \
		while (!(cond)) {                                              \
			cr_assert_lt(tr_test_now(), end_,                      \
				     "timed out waiting for " #cond);          \
			sleep_ms(1);                                           \
		}                                                              \
	} while (0)

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

static void send_ok(tr_ref to, uint32_t type)
{
	int rc = tr_send(to, type, NULL, 0);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

static tr_sup_stats stats(tr_supervisor *h)
{
	tr_sup_stats st;

	cr_assert_eq(tr_supervisor_stats(h, &st), TR_OK);
	return st;
}

static uint64_t restarts(tr_supervisor *h) { return stats(h).restarts; }
static uint64_t exits(tr_supervisor *h) { return stats(h).child_exits; }

/* ---- kids ---- */

struct kid_spec {
	atomic_uint start_calls; /* start function calls */
	atomic_uint starts;      /* of which succeeded: the incarnations */
	atomic_uint cleanups;
	atomic_int last_reason;  /* of the latest cleanup */
	_Atomic uint64_t last_ref; /* latest incarnation's reference */
	/* start calls number fail_from..fail_to (1-based) return fail_rc */
	unsigned fail_from, fail_to;
	int fail_rc;
	/* what the latest T_PROBE saw */
	atomic_uint probes;
	atomic_uint seen_count, seen_incarnation;
};

struct kid {
	struct kid_spec *spec;
	unsigned incarnation;
	unsigned count; /* fresh state: starts at 0 in every incarnation */
};

static int kid_beh(void *state, tr_msg *m)
{
	struct kid *k = state;

	switch (tr_msg_type(m)) {
	case T_INC:
		k->count++;
		break;
	case T_PROBE:
		atomic_store(&k->spec->seen_count, k->count);
		atomic_store(&k->spec->seen_incarnation, k->incarnation);
		atomic_fetch_add(&k->spec->probes, 1);
		break;
	case T_CRASH:
		return CRASH_RC;
	case T_EXIT_OK:
		return tr_stop_self(TR_OK);
	}
	return 0;
}

static void kid_cleanup(void *state, int reason)
{
	struct kid *k = state;

	atomic_store(&k->spec->last_reason, reason);
	atomic_fetch_add(&k->spec->cleanups, 1);
	free(k);
}

static int kid_start(tr_system *sys, void *arg, tr_ref *out)
{
	struct kid_spec *ks = arg;
	unsigned call = atomic_fetch_add(&ks->start_calls, 1) + 1;
	tr_actor_opts o = { .behaviour = kid_beh, .cleanup = kid_cleanup };
	struct kid *k;
	int rc;

	if (call >= ks->fail_from && call <= ks->fail_to)
		return ks->fail_rc;
	k = calloc(1, sizeof(*k));
	if (!k)
		return TR_ENOMEM;
	/* only this spec's supervisor calls its start: no race on starts */
	k->spec = ks;
	k->incarnation = atomic_load(&ks->starts) + 1;
	o.state = k;
	rc = tr_spawn_opts(sys, &o, out);
	if (rc != TR_OK) {
		free(k);
		return rc;
	}
	atomic_store(&ks->last_ref, out->id);
	atomic_fetch_add(&ks->starts, 1); /* after last_ref: waiters read it next */
	return TR_OK;
}

static tr_child_spec kid_child(struct kid_spec *ks, tr_restart restart)
{
	return (tr_child_spec){ .name = NULL, .start = kid_start, .arg = ks,
				.restart = restart };
}

/* Asks child `r` for its count and incarnation. */
static void probe(struct kid_spec *ks, tr_ref r, unsigned *count, unsigned *incarnation)
{
	unsigned before = atomic_load(&ks->probes);

	send_ok(r, T_PROBE);
	WAIT_FOR(atomic_load(&ks->probes) > before);
	*count = atomic_load(&ks->seen_count);
	*incarnation = atomic_load(&ks->seen_incarnation);
}

static void inc(tr_ref r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		send_ok(r, T_INC);
}

static void expect_child(struct kid_spec *ks, tr_ref r, unsigned count, unsigned incarnation)
{
	unsigned c, i;

	cr_assert(!tr_ref_is_none(r));
	probe(ks, r, &c, &i);
	cr_assert_eq(c, count, "count %u, expected %u", c, count);
	cr_assert_eq(i, incarnation, "incarnation %u, expected %u", i, incarnation);
}

/* The first reference that is not `old` (and not NONE) child i gets. */
static tr_ref wait_new_child(tr_supervisor *h, size_t i, tr_ref old)
{
	tr_ref r;

	WAIT_FOR((r = tr_supervisor_child(h, i), !tr_ref_is_none(r) && !tr_ref_eq(r, old)));
	return r;
}

/* ---- watcher: monitors an actor and records how it stopped ---- */

struct watcher {
	atomic_int monitor_rc;
	atomic_bool watching;
	atomic_uint downs;
	atomic_int reason;
};

static int watcher_beh(void *state, tr_msg *m)
{
	struct watcher *w = state;
	const tr_down *d = tr_msg_down(m);

	if (tr_msg_type(m) == T_WATCH) {
		tr_ref target;

		memcpy(&target, tr_msg_data(m), sizeof(target));
		atomic_store(&w->monitor_rc, tr_monitor(target));
		atomic_store(&w->watching, true);
	} else if (d && tr_msg_type(m) == TR_MSG_DOWN) {
		atomic_store(&w->reason, d->reason);
		atomic_fetch_add(&w->downs, 1);
	}
	return 0;
}

/* `w` must outlive the system. Returns once the monitor is set. */
static void watch(tr_system *sys, struct watcher *w, tr_ref target)
{
	tr_ref r;

	memset(w, 0, sizeof(*w));
	atomic_store(&w->reason, 12345); /* no TR_* code */
	cr_assert_eq(tr_spawn(sys, watcher_beh, w, &r), TR_OK);
	cr_assert_eq(tr_send(r, T_WATCH, &target, sizeof(target)), TR_OK);
	WAIT_FOR(atomic_load(&w->watching));
	cr_assert_eq(atomic_load(&w->monitor_rc), TR_OK);
}

static int wait_down(struct watcher *w)
{
	WAIT_FOR(atomic_load(&w->downs) > 0);
	return atomic_load(&w->reason);
}

/* ---- starting ---- */

static tr_supervisor *start_sup(tr_system *sys, tr_strategy strategy, unsigned max_restarts,
				uint32_t period_ms, const tr_child_spec *specs, size_t n,
				tr_ref *out)
{
	tr_sup_opts o = { .strategy = strategy, .max_restarts = max_restarts,
			  .period_ms = period_ms, .children = specs, .nchildren = n };
	tr_supervisor *h = NULL;
	int rc = tr_supervisor_start(sys, &o, out, &h);

	cr_assert_eq(rc, TR_OK, "tr_supervisor_start: %s", tr_err_name(rc));
	cr_assert_not_null(h);
	return h;
}

static void finish(tr_system **sys, tr_supervisor **h)
{
	tr_system_destroy(sys);
	tr_supervisor_release(h);
	cr_assert_null(*h);
}

/* ---- strategies ---- */

Test(supervisor, starts_children_in_order)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	tr_supervisor *h;
	tr_ref sup, seen[3];

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 5000, specs, 3, &sup);
	/* started before tr_supervisor_start returned */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(atomic_load(&ks[i].starts), 1);
		seen[i] = tr_supervisor_child(h, (size_t)i);
		cr_assert_eq(seen[i].id, atomic_load(&ks[i].last_ref));
		expect_child(&ks[i], seen[i], 0, 1);
	}
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 3)));
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(exits(h), 0);
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

Test(supervisor, one_for_one_restarts_only_the_crashed_child)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	tr_supervisor *h;
	tr_ref sup, c[3], fresh;

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 3, &sup);
	for (int i = 0; i < 3; i++) {
		c[i] = tr_supervisor_child(h, (size_t)i);
		inc(c[i], 2);
	}
	send_ok(c[1], T_CRASH);
	fresh = wait_new_child(h, 1, c[1]);
	WAIT_FOR(restarts(h) == 1);
	expect_child(&ks[0], c[0], 2, 1);
	expect_child(&ks[1], fresh, 0, 2); /* fresh state */
	expect_child(&ks[2], c[2], 2, 1);
	cr_assert(tr_ref_eq(tr_supervisor_child(h, 0), c[0]));
	cr_assert(tr_ref_eq(tr_supervisor_child(h, 2), c[2]));
	cr_assert_eq(atomic_load(&ks[1].cleanups), 1);
	cr_assert_eq(atomic_load(&ks[1].last_reason), CRASH_RC);
	cr_assert_eq(tr_send(c[1], T_INC, NULL, 0), TR_EDEAD);
	WAIT_FOR(exits(h) == 1);
	cr_assert_eq(restarts(h), 1);
	cr_assert_eq(atomic_load(&ks[0].starts) + atomic_load(&ks[2].starts), 2);
	finish(&sys, &h);
}

Test(supervisor, one_for_all_restarts_every_child)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	tr_supervisor *h;
	tr_ref sup, c[3], fresh[3];

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ALL, 3, 60000, specs, 3, &sup);
	for (int i = 0; i < 3; i++) {
		c[i] = tr_supervisor_child(h, (size_t)i);
		inc(c[i], 3);
	}
	send_ok(c[1], T_CRASH);
	WAIT_FOR(restarts(h) == 3);
	for (int i = 0; i < 3; i++) {
		fresh[i] = wait_new_child(h, (size_t)i, c[i]);
		expect_child(&ks[i], fresh[i], 0, 2);
		cr_assert_eq(atomic_load(&ks[i].starts), 2);
		cr_assert_eq(atomic_load(&ks[i].cleanups), 1);
		cr_assert_eq(tr_send(c[i], T_INC, NULL, 0), TR_EDEAD);
	}
	/* the crashed one failed; the others were stopped normally */
	cr_assert_eq(atomic_load(&ks[0].last_reason), TR_OK);
	cr_assert_eq(atomic_load(&ks[1].last_reason), CRASH_RC);
	cr_assert_eq(atomic_load(&ks[2].last_reason), TR_OK);
	/* the DOWNs of the children it stopped caused no further restart (a
	 * DOWN is counted once the restarts it causes are done) */
	WAIT_FOR(exits(h) == 3);
	cr_assert_eq(restarts(h), 3);
	finish(&sys, &h);
}

Test(supervisor, rest_for_one_restarts_the_later_children)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[4] = { { .start_calls = 0 } };
	tr_child_spec specs[4];
	tr_supervisor *h;
	tr_ref sup, c[4], fresh[4];

	for (int i = 0; i < 4; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_REST_FOR_ONE, 5, 60000, specs, 4, &sup);
	for (int i = 0; i < 4; i++) {
		c[i] = tr_supervisor_child(h, (size_t)i);
		inc(c[i], 1);
	}
	send_ok(c[1], T_CRASH);
	WAIT_FOR(restarts(h) == 3);
	expect_child(&ks[0], c[0], 1, 1); /* earlier: untouched */
	cr_assert(tr_ref_eq(tr_supervisor_child(h, 0), c[0]));
	for (int i = 1; i < 4; i++) {
		fresh[i] = wait_new_child(h, (size_t)i, c[i]);
		expect_child(&ks[i], fresh[i], 0, 2);
	}
	cr_assert_eq(atomic_load(&ks[1].last_reason), CRASH_RC);
	cr_assert_eq(atomic_load(&ks[2].last_reason), TR_OK);
	cr_assert_eq(atomic_load(&ks[3].last_reason), TR_OK);
	WAIT_FOR(exits(h) == 3);
	cr_assert_eq(restarts(h), 3);

	/* the last child has nobody after it: only it restarts */
	inc(fresh[2], 4);
	send_ok(fresh[3], T_CRASH);
	WAIT_FOR(restarts(h) == 4);
	expect_child(&ks[3], wait_new_child(h, 3, fresh[3]), 0, 3);
	expect_child(&ks[2], fresh[2], 4, 2);
	expect_child(&ks[0], c[0], 1, 1);
	WAIT_FOR(exits(h) == 4);
	cr_assert_eq(restarts(h), 4);
	cr_assert_eq(atomic_load(&ks[0].starts), 1);
	cr_assert_eq(atomic_load(&ks[1].starts), 2);
	cr_assert_eq(atomic_load(&ks[2].starts), 2);
	finish(&sys, &h);
}

/* Children that fail together make one group restart: a DOWN from a child
 * the supervisor already asked to stop only joins the restart in progress
 * (max_restarts 1: a second restart decision would give up). */
Test(supervisor, one_for_all_failures_together_restart_once)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup, c[3];

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ALL, 1, 60000, specs, 3, &sup);
	watch(sys, &w, sup);
	for (int i = 0; i < 3; i++)
		c[i] = tr_supervisor_child(h, (size_t)i);
	/* the first crash may make it stop the others before they get theirs */
	for (int i = 0; i < 3; i++) {
		int rc = tr_send(c[i], T_CRASH, NULL, 0);

		cr_assert(rc == TR_OK || rc == TR_EDEAD, "tr_send: %s", tr_err_name(rc));
	}
	WAIT_FOR(exits(h) == 3);
	cr_assert_eq(restarts(h), 3);
	for (int i = 0; i < 3; i++) {
		expect_child(&ks[i], wait_new_child(h, (size_t)i, c[i]), 0, 2);
		cr_assert_eq(atomic_load(&ks[i].starts), 2);
	}
	cr_assert_eq(stats(h).escalations, 0);
	cr_assert_eq(atomic_load(&w.downs), 0);
	finish(&sys, &h);
}

/* Two children of a rest_for_one supervisor fail together. If it hears of
 * the earlier one first, one group restart (3 restarts) covers both; if it
 * hears of the later one first and finishes restarting it before the
 * earlier one's DOWN comes, that DOWN makes a second group restart (3 + 2).
 * Either way the first child is untouched, and the restart of B is the last
 * group restart: once it is done the counters are final. */
Test(supervisor, rest_for_one_failures_together)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[4] = { { .start_calls = 0 } };
	tr_child_spec specs[4];
	tr_supervisor *h;
	tr_ref sup, c[4];
	uint64_t e;

	for (int i = 0; i < 4; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_REST_FOR_ONE, 2, 60000, specs, 4, &sup);
	for (int i = 0; i < 4; i++) {
		c[i] = tr_supervisor_child(h, (size_t)i);
		inc(c[i], 1);
	}
	send_ok(c[2], T_CRASH);
	send_ok(c[1], T_CRASH);
	/* B restarts in the last group restart, which counts its DOWN last: 3
	 * or 5 then (2 or 4 while it is still under way) */
	WAIT_FOR(atomic_load(&ks[1].starts) == 2 && ((e = exits(h)) == 3 || e == 5));
	cr_assert_eq(restarts(h), e);
	cr_assert_eq(atomic_load(&ks[2].starts), e == 3 ? 2 : 3);
	cr_assert_eq(atomic_load(&ks[3].starts), e == 3 ? 2 : 3);
	expect_child(&ks[0], c[0], 1, 1);
	cr_assert_eq(atomic_load(&ks[0].starts), 1);
	for (int i = 1; i < 4; i++) {
		tr_ref r = wait_new_child(h, (size_t)i, c[i]);

		cr_assert_eq(r.id, atomic_load(&ks[i].last_ref));
		expect_child(&ks[i], r, 0, atomic_load(&ks[i].starts));
	}
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

/* ---- restart types ---- */

Test(supervisor, transient_normal_exit_is_not_restarted)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_TRANSIENT),
				   kid_child(&ks[1], TR_PERMANENT) };
	tr_supervisor *h;
	tr_ref sup, c0;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 2, &sup);
	c0 = tr_supervisor_child(h, 0);
	send_ok(c0, T_EXIT_OK);
	WAIT_FOR(exits(h) == 1);
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(atomic_load(&ks[0].starts), 1);
	cr_assert_eq(atomic_load(&ks[0].last_reason), TR_OK);
	/* the supervisor goes on with the others */
	expect_child(&ks[1], tr_supervisor_child(h, 1), 0, 1);
	finish(&sys, &h);
}

Test(supervisor, transient_failure_is_restarted)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_TRANSIENT);
	tr_supervisor *h;
	tr_ref sup, c0;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &spec, 1, &sup);
	c0 = tr_supervisor_child(h, 0);
	inc(c0, 5);
	send_ok(c0, T_CRASH);
	expect_child(&ks, wait_new_child(h, 0, c0), 0, 2);
	WAIT_FOR(exits(h) == 1);
	cr_assert_eq(restarts(h), 1);
	finish(&sys, &h);
}

Test(supervisor, temporary_is_never_restarted)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_TEMPORARY),
				   kid_child(&ks[1], TR_TEMPORARY) };
	tr_supervisor *h;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 2, &sup);
	send_ok(tr_supervisor_child(h, 0), T_CRASH);
	WAIT_FOR(exits(h) == 1);
	send_ok(tr_supervisor_child(h, 1), T_EXIT_OK);
	WAIT_FOR(exits(h) == 2);
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 1)));
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(atomic_load(&ks[0].start_calls), 1);
	cr_assert_eq(atomic_load(&ks[1].start_calls), 1);
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

/* A group restart leaves finished children down and does not start a
 * temporary child again after stopping it. */
Test(supervisor, group_restart_skips_finished_and_temporary_children)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3] = { kid_child(&ks[0], TR_TRANSIENT),
				   kid_child(&ks[1], TR_TEMPORARY),
				   kid_child(&ks[2], TR_PERMANENT) };
	tr_supervisor *h;
	tr_ref sup, c2;

	h = start_sup(sys, TR_ONE_FOR_ALL, 3, 60000, specs, 3, &sup);
	send_ok(tr_supervisor_child(h, 0), T_EXIT_OK);
	WAIT_FOR(exits(h) == 1);
	c2 = tr_supervisor_child(h, 2);
	send_ok(c2, T_CRASH);
	/* the temporary child is stopped, then only the permanent one is back */
	expect_child(&ks[2], wait_new_child(h, 2, c2), 0, 2);
	WAIT_FOR(exits(h) == 3);
	cr_assert_eq(restarts(h), 1);
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 1)));
	cr_assert_eq(atomic_load(&ks[0].start_calls), 1);
	cr_assert_eq(atomic_load(&ks[1].start_calls), 1);
	WAIT_FOR(atomic_load(&ks[1].cleanups) == 1);
	cr_assert_eq(atomic_load(&ks[1].last_reason), TR_OK);
	finish(&sys, &h);
}

/* ---- intensity ---- */

/* Crashes child i of one_for_one `h` and waits until it is back and the
 * supervisor is done with the DOWN; returns the new ref. */
static tr_ref crash_and_wait(tr_supervisor *h, size_t i)
{
	tr_ref old = tr_supervisor_child(h, i), fresh;
	uint64_t before = exits(h);

	cr_assert(!tr_ref_is_none(old));
	send_ok(old, T_CRASH);
	fresh = wait_new_child(h, i, old);
	WAIT_FOR(exits(h) > before);
	return fresh;
}

static void expect_all_stopped(struct kid_spec *ks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		WAIT_FOR(atomic_load(&ks[i].cleanups) == atomic_load(&ks[i].starts));
		if (atomic_load(&ks[i].starts))
			cr_assert_eq(tr_send((tr_ref){atomic_load(&ks[i].last_ref)}, T_INC,
					     NULL, 0), TR_EDEAD);
	}
}

Test(supervisor, intensity_exceeded_gives_up_and_stops_children)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;
	tr_sup_stats st;

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ONE, 2, 60000, specs, 3, &sup);
	watch(sys, &w, sup);
	crash_and_wait(h, 1);
	crash_and_wait(h, 1);
	cr_assert_eq(restarts(h), 2);
	send_ok(tr_supervisor_child(h, 1), T_CRASH); /* the third in the period */
	cr_assert_eq(wait_down(&w), TR_ESUPERVISOR);
	st = stats(h);
	cr_assert_eq(st.escalations, 1);
	cr_assert_eq(st.restarts, 2);
	cr_assert_eq(st.child_exits, 5); /* 3 crashes + the 2 it stopped */
	for (size_t i = 0; i < 3; i++)
		cr_assert(tr_ref_is_none(tr_supervisor_child(h, i)));
	expect_all_stopped(ks, 3);
	cr_assert_eq(atomic_load(&ks[0].last_reason), TR_OK);
	cr_assert_eq(atomic_load(&ks[2].last_reason), TR_OK);
	cr_assert_eq(atomic_load(&ks[1].starts), 3);
	cr_assert_eq(atomic_load(&w.downs), 1);
	cr_assert_eq(tr_send(sup, T_OTHER, NULL, 0), TR_EDEAD);
	finish(&sys, &h);
}

Test(supervisor, zero_intensity_gives_up_at_the_first_failure)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ALL, 0, 1000, &spec, 1, &sup);
	watch(sys, &w, sup);
	send_ok(tr_supervisor_child(h, 0), T_CRASH);
	cr_assert_eq(wait_down(&w), TR_ESUPERVISOR);
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(stats(h).escalations, 1);
	cr_assert_eq(atomic_load(&ks.start_calls), 1);
	finish(&sys, &h);
}

Test(supervisor, default_intensity_is_three_restarts)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;

	h = start_sup(sys, TR_REST_FOR_ONE, 0, 0, &spec, 1, &sup);
	watch(sys, &w, sup);
	for (int i = 0; i < 3; i++)
		crash_and_wait(h, 0);
	cr_assert_eq(atomic_load(&w.downs), 0);
	send_ok(tr_supervisor_child(h, 0), T_CRASH);
	cr_assert_eq(wait_down(&w), TR_ESUPERVISOR);
	cr_assert_eq(restarts(h), 3);
	finish(&sys, &h);
}

/* Only restarts within the period count: with a period this short, waiting
 * for the first restart's stamp to age lets the next one through. */
Test(supervisor, restarts_older_than_the_period_do_not_count)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ONE, 1, 20, &spec, 1, &sup);
	watch(sys, &w, sup);
	for (int i = 0; i < 4; i++) {
		crash_and_wait(h, 0);
		sleep_ms(60); /* a lower bound only: longer is just as good */
	}
	cr_assert_eq(restarts(h), 4);
	cr_assert_eq(atomic_load(&w.downs), 0);
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

/* ---- start functions that fail ---- */

Test(supervisor, failed_restart_is_retried)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .fail_from = 2, .fail_to = 3, .fail_rc = TR_ENOMEM };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_supervisor *h;
	tr_ref sup, c0;

	/* 1 restart + 2 failed attempts = 3 within the intensity */
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &spec, 1, &sup);
	c0 = tr_supervisor_child(h, 0);
	inc(c0, 2);
	send_ok(c0, T_CRASH);
	expect_child(&ks, wait_new_child(h, 0, c0), 0, 2);
	cr_assert_eq(atomic_load(&ks.start_calls), 4);
	WAIT_FOR(restarts(h) == 1); /* counted just after the child is published */
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

Test(supervisor, restart_that_keeps_failing_gives_up)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[2] = { { .fail_from = 2, .fail_to = ~0u, .fail_rc = 7 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_PERMANENT),
				   kid_child(&ks[1], TR_PERMANENT) };
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 2, &sup);
	watch(sys, &w, sup);
	send_ok(tr_supervisor_child(h, 0), T_CRASH);
	cr_assert_eq(wait_down(&w), TR_ESUPERVISOR);
	/* the crash counts once, then each failed attempt: the third attempt
	 * is the fourth restart in the period */
	cr_assert_eq(atomic_load(&ks[0].start_calls), 4);
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(stats(h).escalations, 1);
	expect_all_stopped(ks, 2);
	cr_assert_eq(atomic_load(&ks[1].last_reason), TR_OK);
	finish(&sys, &h);
}

Test(supervisor, first_start_failure_fails_the_supervisor)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 },
				  { .fail_from = 1, .fail_to = 1, .fail_rc = TR_ENOMEM },
				  { .start_calls = 0 } };
	tr_child_spec specs[3];
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .children = specs, .nchildren = 3 };
	tr_supervisor *h = (tr_supervisor *)&o; /* must stay untouched */
	tr_ref sup = { 77 };
	tr_stats st;

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, &h), TR_ENOMEM);
	cr_assert_eq(sup.id, 77);
	cr_assert(h == (tr_supervisor *)&o);
	/* the child started before it is stopped again; the later never ran */
	WAIT_FOR(atomic_load(&ks[0].cleanups) == 1);
	cr_assert_eq(atomic_load(&ks[0].last_reason), TR_OK);
	cr_assert_eq(atomic_load(&ks[2].start_calls), 0);

	/* a positive failure is reported as TR_EFAILED */
	ks[1].fail_rc = 1;
	ks[1].fail_to = 2;
	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, NULL), TR_EFAILED);
	WAIT_FOR(atomic_load(&ks[0].cleanups) == 2);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	cr_assert_eq(st.alive, 0);
	tr_system_destroy(&sys);
}

/* ---- nesting ---- */

#define NESTED_MAX 8

struct nested {
	tr_sup_opts opts;
	tr_child_spec spec;
	struct kid_spec worker;
	atomic_uint starts;
	tr_supervisor *handles[NESTED_MAX]; /* released by the test */
};

static int nested_start(tr_system *sys, void *arg, tr_ref *out)
{
	struct nested *n = arg;
	unsigned k = atomic_load(&n->starts);
	tr_supervisor *h;
	int rc;

	if (k >= NESTED_MAX)
		return TR_ELIMIT;
	rc = tr_supervisor_start(sys, &n->opts, out, &h);
	if (rc != TR_OK)
		return rc;
	n->handles[k] = h;
	atomic_store(&n->starts, k + 1); /* publishes handles[k] */
	return TR_OK;
}

static tr_supervisor *nested_current(struct nested *n)
{
	unsigned k = atomic_load(&n->starts);

	cr_assert_gt(k, 0);
	return n->handles[k - 1];
}

Test(supervisor, nested_supervisor_escalates_to_its_parent)
{
	tr_system *sys = sys_start(2);
	struct nested n = { .starts = 0 };
	tr_child_spec top = { .name = "nested", .start = nested_start, .arg = &n,
			      .restart = TR_PERMANENT };
	tr_supervisor *h, *inner;
	tr_ref sup, inner_ref;
	unsigned nstarts;

	n.spec = kid_child(&n.worker, TR_PERMANENT);
	n.opts = (tr_sup_opts){ .strategy = TR_ONE_FOR_ONE, .max_restarts = 1,
				.period_ms = 60000, .children = &n.spec, .nchildren = 1 };
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &top, 1, &sup);
	cr_assert_eq(atomic_load(&n.starts), 1);
	inner = nested_current(&n);
	inner_ref = tr_supervisor_child(h, 0);
	cr_assert(!tr_ref_is_none(inner_ref));

	/* one crash: the inner supervisor copes */
	crash_and_wait(inner, 0);
	cr_assert_eq(restarts(inner), 1);
	cr_assert_eq(restarts(h), 0);
	/* a second within its period: it gives up, the parent restarts it */
	send_ok(tr_supervisor_child(inner, 0), T_CRASH);
	wait_new_child(h, 0, inner_ref);
	WAIT_FOR(restarts(h) == 1);
	cr_assert_eq(stats(inner).escalations, 1);
	cr_assert(tr_ref_is_none(tr_supervisor_child(inner, 0)));
	nstarts = atomic_load(&n.starts);
	cr_assert_eq(nstarts, 2);
	/* the new inner supervisor started a fresh worker */
	inner = nested_current(&n);
	cr_assert_eq(stats(inner).restarts, 0);
	expect_child(&n.worker, tr_supervisor_child(inner, 0), 0, 3);
	WAIT_FOR(exits(h) == 1);
	cr_assert_eq(restarts(h), 1);
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
	for (unsigned k = 0; k < nstarts; k++)
		tr_supervisor_release(&n.handles[k]);
}

/* ---- counters ---- */

Test(supervisor, stats_count_restarts_and_exits)
{
	enum { CRASHES = 10 };
	tr_system *sys = sys_start(2);
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_PERMANENT),
				   kid_child(&ks[1], TR_TRANSIENT) };
	tr_supervisor *h;
	tr_sup_stats st;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ONE, 1000, 60000, specs, 2, &sup);
	for (int i = 0; i < CRASHES; i++)
		crash_and_wait(h, (size_t)(i % 2));
	send_ok(tr_supervisor_child(h, 1), T_EXIT_OK); /* exit, no restart */
	WAIT_FOR(exits(h) == CRASHES + 1);
	st = stats(h);
	cr_assert_eq(st.restarts, CRASHES);
	cr_assert_eq(st.child_exits, CRASHES + 1);
	cr_assert_eq(st.escalations, 0);
	cr_assert_eq(atomic_load(&ks[0].starts) + atomic_load(&ks[1].starts), CRASHES + 2);
	finish(&sys, &h);
}

/* ---- the supervisor's own life ---- */

Test(supervisor, stopping_the_supervisor_stops_its_children)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[3] = { { .start_calls = 0 } };
	tr_child_spec specs[3];
	struct watcher w;
	tr_supervisor *h;
	tr_ref sup;

	for (int i = 0; i < 3; i++)
		specs[i] = kid_child(&ks[i], TR_PERMANENT);
	h = start_sup(sys, TR_ONE_FOR_ALL, 3, 60000, specs, 3, &sup);
	watch(sys, &w, sup);
	cr_assert_eq(tr_stop(sup), TR_OK);
	cr_assert_eq(wait_down(&w), TR_OK);
	for (size_t i = 0; i < 3; i++)
		cr_assert(tr_ref_is_none(tr_supervisor_child(h, i)));
	expect_all_stopped(ks, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(atomic_load(&ks[i].last_reason), TR_OK);
		cr_assert_eq(atomic_load(&ks[i].starts), 1);
	}
	cr_assert_eq(restarts(h), 0);
	finish(&sys, &h);
}

Test(supervisor, shutdown_stops_supervisor_and_children)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_PERMANENT),
				   kid_child(&ks[1], TR_TRANSIENT) };
	tr_supervisor *h;
	tr_stats st;
	tr_ref sup;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 2, &sup);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	cr_assert_eq(st.alive, 0);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(atomic_load(&ks[i].cleanups), 1);
		cr_assert_eq(atomic_load(&ks[i].start_calls), 1);
	}
	/* the handle outlives the actor */
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	cr_assert_eq(restarts(h), 0);
	cr_assert_eq(stats(h).escalations, 0);
	finish(&sys, &h);
}

/* Without a handle the actor owns the supervisor alone (ASan checks that
 * its memory goes with it). */
Test(supervisor, runs_without_a_handle)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .children = &spec, .nchildren = 1 };
	struct watcher w;
	tr_ref sup, c;

	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, NULL), TR_OK);
	watch(sys, &w, sup);
	c = (tr_ref){ atomic_load(&ks.last_ref) };
	send_ok(c, T_CRASH);
	WAIT_FOR(atomic_load(&ks.starts) == 2);
	expect_child(&ks, (tr_ref){ atomic_load(&ks.last_ref) }, 0, 2);
	cr_assert_eq(tr_stop(sup), TR_OK);
	cr_assert_eq(wait_down(&w), TR_OK);
	expect_all_stopped(&ks, 1);
	tr_system_destroy(&sys);
}

Test(supervisor, ignores_other_messages)
{
	tr_system *sys = sys_start(2);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_supervisor *h;
	tr_ref sup, c0;

	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &spec, 1, &sup);
	send_ok(sup, T_OTHER);
	cr_assert_eq(tr_send(sup, T_CRASH, &sup, sizeof(sup)), TR_OK);
	c0 = tr_supervisor_child(h, 0);
	send_ok(c0, T_CRASH);
	expect_child(&ks, wait_new_child(h, 0, c0), 0, 2);
	WAIT_FOR(exits(h) == 1);
	cr_assert_eq(restarts(h), 1);
	finish(&sys, &h);
}

Test(supervisor, zero_children)
{
	tr_system *sys = sys_start(1);
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ALL };
	struct watcher w;
	tr_supervisor *h = NULL;
	tr_ref sup;

	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, &h), TR_OK);
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	cr_assert_eq(restarts(h), 0);
	watch(sys, &w, sup);
	cr_assert_eq(tr_stop(sup), TR_OK);
	cr_assert_eq(wait_down(&w), TR_OK);
	finish(&sys, &h);
}

/* Children are spawned and monitored before the system runs. */
Test(supervisor, starts_before_the_system)
{
	tr_config cfg;
	tr_system *sys = NULL;
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_PERMANENT),
				   kid_child(&ks[1], TR_PERMANENT) };
	tr_supervisor *h;
	tr_ref sup, c1;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = 2;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	h = start_sup(sys, TR_ONE_FOR_ALL, 3, 60000, specs, 2, &sup);
	cr_assert_eq(atomic_load(&ks[0].starts), 1);
	cr_assert_eq(atomic_load(&ks[1].starts), 1);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	c1 = tr_supervisor_child(h, 1);
	send_ok(c1, T_CRASH);
	expect_child(&ks[1], wait_new_child(h, 1, c1), 0, 2);
	WAIT_FOR(restarts(h) == 2);
	finish(&sys, &h);
}

/* A system that never ran: shutdown runs every cleanup hook on this thread;
 * the supervisor's stops its children without a worker. */
Test(supervisor, system_that_never_started)
{
	tr_config cfg;
	tr_system *sys = NULL;
	struct kid_spec ks[2] = { { .start_calls = 0 } };
	tr_child_spec specs[2] = { kid_child(&ks[0], TR_PERMANENT),
				   kid_child(&ks[1], TR_TEMPORARY) };
	tr_supervisor *h;
	tr_ref sup;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = 1;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, specs, 2, &sup);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(atomic_load(&ks[i].cleanups), 1);
		cr_assert_eq(atomic_load(&ks[i].last_reason), TR_ESHUTDOWN);
	}
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 0)));
	finish(&sys, &h);
}

/* ---- errors ---- */

Test(supervisor, argument_errors)
{
	tr_system *sys = sys_start(1);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .children = &spec, .nchildren = 1 };
	tr_sup_opts bad;
	tr_child_spec bad_spec;
	tr_supervisor *h = NULL;
	tr_sup_stats st;
	tr_ref sup;

	cr_assert_eq(tr_supervisor_start(NULL, &o, &sup, &h), TR_EINVAL);
	cr_assert_eq(tr_supervisor_start(sys, NULL, &sup, &h), TR_EINVAL);
	cr_assert_eq(tr_supervisor_start(sys, &o, NULL, &h), TR_EINVAL);
	bad = o;
	bad.strategy = (tr_strategy)3;
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	bad = o;
	bad.strategy = (tr_strategy)-1;
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	bad = o;
	bad.children = NULL;
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	bad = o;
	bad.max_restarts = 2; /* without a period */
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	bad = o;
	bad_spec = spec;
	bad_spec.restart = (tr_restart)9;
	bad.children = &bad_spec;
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	bad_spec = spec;
	bad_spec.start = NULL;
	cr_assert_eq(tr_supervisor_start(sys, &bad, &sup, &h), TR_EINVAL);
	cr_assert_null(h);
	cr_assert_eq(atomic_load(&ks.start_calls), 0, "nothing started on errors");

	cr_assert_eq(tr_supervisor_stats(NULL, &st), TR_EINVAL);
	cr_assert(tr_ref_is_none(tr_supervisor_child(NULL, 0)));
	tr_supervisor_release(NULL);
	tr_supervisor_release(&h);

	/* the spec is copied: the caller's may change afterwards */
	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, &h), TR_OK);
	cr_assert_eq(tr_supervisor_stats(h, NULL), TR_EINVAL);
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, 1)));
	cr_assert(tr_ref_is_none(tr_supervisor_child(h, (size_t)-1)));
	spec.start = NULL;
	spec.name = NULL;
	send_ok(tr_supervisor_child(h, 0), T_CRASH);
	WAIT_FOR(restarts(h) == 1);
	cr_assert_eq(atomic_load(&ks.starts), 2);
	finish(&sys, &h);
}

static int ignore_beh(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

/* A named child is registered, and rebound to each new incarnation. */
Test(supervisor, named_child_is_rebound_on_restart)
{
	tr_system *sys = sys_start(1);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_supervisor *h;
	tr_ref sup, before, after;

	spec.name = "the-kid";
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &spec, 1, &sup);
	cr_assert_eq(tr_whereis(sys, "the-kid", &before), TR_OK);
	cr_assert(tr_ref_eq(before, tr_supervisor_child(h, 0)));
	crash_and_wait(h, 0);
	cr_assert_eq(tr_whereis(sys, "the-kid", &after), TR_OK);
	cr_assert_not(tr_ref_eq(before, after), "the name follows the new incarnation");
	cr_assert(tr_ref_eq(after, tr_supervisor_child(h, 0)));
	finish(&sys, &h);
}

/* A name another actor holds makes the child's start fail. */
Test(supervisor, named_child_name_taken_fails_start)
{
	tr_system *sys = sys_start(1);
	struct kid_spec ks = { .start_calls = 0 };
	tr_child_spec spec = kid_child(&ks, TR_PERMANENT);
	tr_sup_opts o = { .strategy = TR_ONE_FOR_ONE, .max_restarts = 3, .period_ms = 60000,
			  .children = &spec, .nchildren = 1 };
	tr_ref squatter, sup;

	cr_assert_eq(tr_spawn(sys, ignore_beh, NULL, &squatter), TR_OK);
	cr_assert_eq(tr_register(sys, "taken", squatter), TR_OK);
	spec.name = "taken";
	cr_assert_eq(tr_supervisor_start(sys, &o, &sup, NULL), TR_EEXIST);
	tr_system_destroy(&sys);
}

/* The name is copied too: the caller's buffer may go. */
Test(supervisor, child_name_is_copied)
{
	tr_system *sys = sys_start(1);
	struct kid_spec ks = { .start_calls = 0 };
	char *name = malloc(16);
	tr_child_spec spec;
	tr_supervisor *h;
	tr_ref sup;

	cr_assert_not_null(name);
	strcpy(name, "short-lived");
	spec = kid_child(&ks, TR_PERMANENT);
	spec.name = name;
	h = start_sup(sys, TR_ONE_FOR_ONE, 3, 60000, &spec, 1, &sup);
	free(name);
	crash_and_wait(h, 0);
	finish(&sys, &h);
}
