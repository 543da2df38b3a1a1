/*
 * Unit tests for troupe/registry.h: binding names to actors, lookups that
 * never hand out an unsafe reference, names that die with their actor,
 * spawn-or-get under contention, and the error contract.
 *
 * Threads that race on a name start together behind a barrier; results are
 * collected in plain arrays and checked on the test's own thread once every
 * racer is joined (Criterion asserts only from the test thread).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "support.h"

#define WAIT_S 30

TestSuite(registry, .timeout = 120);

enum {
	T_DATA = 0x300,
	T_PROBE,
};

/* ---- systems and actors ---- */

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

static tr_stats stats(tr_system *sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	return st;
}

static int idle_beh(void *state, tr_msg *m)
{
	(void)state;
	(void)m;
	return 0;
}

static tr_ref spawn_idle(tr_system *sys)
{
	tr_ref r = TR_REF_NONE;
	int rc = tr_spawn(sys, idle_beh, NULL, &r);

	cr_assert_eq(rc, TR_OK, "tr_spawn: %s", tr_err_name(rc));
	cr_assert(!tr_ref_is_none(r));
	return r;
}

/* An actor that counts what it gets, checks each message was addressed to
 * this very incarnation (the payload carries the target's id), and reports
 * its cleanup. */
struct mortal {
	atomic_uint got;
	atomic_uint misrouted;
	atomic_uint cleanups;
	tr_test_latch got_one;
	tr_test_latch cleaned;
};

static void mortal_init(struct mortal *m)
{
	memset(m, 0, sizeof(*m));
	tr_test_latch_init(&m->got_one, 1);
	tr_test_latch_init(&m->cleaned, 1);
}

static void mortal_destroy(struct mortal *m)
{
	tr_test_latch_destroy(&m->got_one);
	tr_test_latch_destroy(&m->cleaned);
}

static int mortal_beh(void *state, tr_msg *msg)
{
	struct mortal *m = state;
	uint64_t to = 0;

	if (tr_msg_size(msg) == sizeof(to))
		memcpy(&to, tr_msg_data(msg), sizeof(to));
	if (to != tr_self().id)
		atomic_fetch_add(&m->misrouted, 1);
	atomic_fetch_add(&m->got, 1);
	tr_test_latch_count_down(&m->got_one);
	return 0;
}

static void mortal_cleanup(void *state, int reason)
{
	struct mortal *m = state;

	(void)reason;
	atomic_fetch_add(&m->cleanups, 1);
	tr_test_latch_count_down(&m->cleaned);
}

static tr_ref spawn_mortal(tr_system *sys, struct mortal *m)
{
	tr_actor_opts o = { .behaviour = mortal_beh, .state = m, .cleanup = mortal_cleanup };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

/* Sends a message that names its addressee. */
static int send_to(tr_ref r)
{
	return tr_send(r, T_DATA, &r.id, sizeof(r.id));
}

/* Stops `r` and waits until its cleanup ran: the reference is stale by then
 * (ident is cleared before the hook runs). */
static void stop_and_wait(tr_ref r, struct mortal *m)
{
	cr_assert_eq(tr_stop(r), TR_OK);
	cr_assert(tr_test_latch_wait(&m->cleaned, WAIT_S), "cleanup never ran");
}

static void assert_whereis(tr_system *sys, const char *name, tr_ref want)
{
	tr_ref got = TR_REF_NONE;
	int rc = tr_whereis(sys, name, &got);

	cr_assert_eq(rc, TR_OK, "whereis(%s): %s", name, tr_err_name(rc));
	cr_assert(tr_ref_eq(got, want), "whereis(%s) = %#llx, want %#llx", name,
		  (unsigned long long)got.id, (unsigned long long)want.id);
}

static void assert_absent(tr_system *sys, const char *name)
{
	tr_ref got = { 0x1234 };
	int rc = tr_whereis(sys, name, &got);

	cr_assert_eq(rc, TR_ENOENT, "whereis(%s): %s, want TR_ENOENT", name, tr_err_name(rc));
	cr_assert_eq(got.id, 0x1234, "whereis wrote *out on failure");
}

/* ---- basics ---- */

Test(registry, register_whereis_unregister)
{
	tr_system *sys = sys_start(2);
	struct mortal m;
	tr_ref a;

	mortal_init(&m);
	a = spawn_mortal(sys, &m);
	assert_absent(sys, "alpha");
	cr_assert_eq(tr_register(sys, "alpha", a), TR_OK);
	assert_whereis(sys, "alpha", a);
	assert_absent(sys, "alph");
	assert_absent(sys, "alphaa");
	cr_assert_eq(tr_unregister(sys, "alpha"), TR_OK);
	assert_absent(sys, "alpha");
	cr_assert_eq(tr_unregister(sys, "alpha"), TR_ENOENT);
	/* unregistering a name leaves its actor alone */
	cr_assert_eq(send_to(a), TR_OK);
	cr_assert(tr_test_latch_wait(&m.got_one, WAIT_S));
	/* and the name can be bound again, to the same actor */
	cr_assert_eq(tr_register(sys, "alpha", a), TR_OK);
	assert_whereis(sys, "alpha", a);
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&m.cleanups), 1);
	mortal_destroy(&m);
}

Test(registry, duplicate_name_is_eexist)
{
	tr_system *sys = sys_start(2);
	tr_ref a = spawn_idle(sys), b = spawn_idle(sys);

	cr_assert_eq(tr_register(sys, "x", a), TR_OK);
	cr_assert_eq(tr_register(sys, "x", b), TR_EEXIST);
	cr_assert_eq(tr_register(sys, "x", a), TR_EEXIST, "rebinding to the same actor");
	assert_whereis(sys, "x", a);
	/* one actor may carry several names */
	cr_assert_eq(tr_register(sys, "y", a), TR_OK);
	assert_whereis(sys, "y", a);
	cr_assert_eq(tr_register(sys, "z", b), TR_OK);
	assert_whereis(sys, "z", b);
	cr_assert_eq(tr_unregister(sys, "x"), TR_OK);
	cr_assert_eq(tr_register(sys, "x", b), TR_OK);
	assert_whereis(sys, "x", b);
	assert_whereis(sys, "y", a);
	sys_finish(&sys);
}

Test(registry, names_are_copied_and_any_content)
{
	static const char *names[] = {
		"a", "aa", "a.b", "a b", "#", "*", "\xc3\xa9t\xc3\xa9", "\x01\x7f\xff",
		"name/with/slashes",
	};
	enum { N = sizeof(names) / sizeof(names[0]) };
	tr_system *sys = sys_start(2);
	tr_ref r[N];
	char buf[32];

	for (int i = 0; i < N; i++) {
		r[i] = spawn_idle(sys);
		cr_assert_eq(tr_register(sys, names[i], r[i]), TR_OK, "%s", names[i]);
	}
	for (int i = 0; i < N; i++)
		assert_whereis(sys, names[i], r[i]);

	/* the registry keeps its own copy of the name */
	strcpy(buf, "volatile");
	cr_assert_eq(tr_register(sys, buf, r[0]), TR_OK);
	strcpy(buf, "changed");
	assert_whereis(sys, "volatile", r[0]);
	assert_absent(sys, "changed");
	sys_finish(&sys);
}

Test(registry, longest_name)
{
	tr_system *sys = sys_start(1);
	char max[TR_NAME_MAX + 2];
	tr_ref a = spawn_idle(sys);

	memset(max, 'n', TR_NAME_MAX);
	max[TR_NAME_MAX] = '\0';
	cr_assert_eq(tr_register(sys, max, a), TR_OK);
	assert_whereis(sys, max, a);
	cr_assert_eq(tr_unregister(sys, max), TR_OK);
	sys_finish(&sys);
}

Test(registry, systems_have_separate_names)
{
	tr_system *s1 = sys_start(1), *s2 = sys_start(1);
	tr_ref a = spawn_idle(s1), b = spawn_idle(s2);

	cr_assert_eq(tr_register(s1, "svc", a), TR_OK);
	assert_absent(s2, "svc");
	cr_assert_eq(tr_register(s2, "svc", b), TR_OK);
	assert_whereis(s1, "svc", a);
	assert_whereis(s2, "svc", b);
	sys_finish(&s2);
	assert_whereis(s1, "svc", a);
	sys_finish(&s1);
}

Test(registry, works_before_start)
{
	tr_system *sys = sys_new(1);
	tr_actor_opts o = { .behaviour = mortal_beh };
	struct mortal m;
	tr_ref a, b = TR_REF_NONE, got;

	mortal_init(&m);
	o.state = &m;
	o.cleanup = mortal_cleanup;
	a = spawn_mortal(sys, &m);
	cr_assert_eq(tr_register(sys, "early", a), TR_OK);
	assert_whereis(sys, "early", a);
	cr_assert_eq(tr_spawn_named(sys, "early", &o, &b), TR_OK);
	cr_assert(tr_ref_eq(a, b));
	cr_assert_eq(tr_system_start(sys), TR_OK);
	cr_assert_eq(tr_whereis(sys, "early", &got), TR_OK);
	cr_assert_eq(send_to(got), TR_OK);
	cr_assert(tr_test_latch_wait(&m.got_one, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&m.misrouted), 0);
	mortal_destroy(&m);
}

/* ---- names die with their actor ---- */

Test(registry, name_of_stopped_actor_disappears)
{
	tr_system *sys = sys_start(2);
	struct mortal m1, m2;
	tr_ref a, b;

	mortal_init(&m1);
	mortal_init(&m2);
	a = spawn_mortal(sys, &m1);
	cr_assert_eq(tr_register(sys, "svc", a), TR_OK);
	cr_assert_eq(tr_register(sys, "svc.alias", a), TR_OK);
	stop_and_wait(a, &m1);
	assert_absent(sys, "svc");
	assert_absent(sys, "svc.alias");
	/* not a binding to a live actor any more */
	cr_assert_eq(tr_unregister(sys, "svc.alias"), TR_ENOENT);
	assert_absent(sys, "svc.alias");

	b = spawn_mortal(sys, &m2);
	cr_assert_eq(tr_register(sys, "svc", b), TR_OK, "name of a stopped actor not reusable");
	assert_whereis(sys, "svc", b);
	cr_assert_eq(tr_register(sys, "svc.alias", b), TR_OK);
	assert_whereis(sys, "svc.alias", b);
	sys_finish(&sys);
	mortal_destroy(&m1);
	mortal_destroy(&m2);
}

static int fail_beh(void *state, tr_msg *m)
{
	(void)m;
	tr_test_latch_count_down(state);
	return 77;
}

Test(registry, name_of_failed_actor_disappears)
{
	tr_system *sys = sys_start(2);
	tr_test_latch ran;
	struct mortal m;
	tr_ref a, b, got;
	tr_actor_opts o = { .behaviour = fail_beh, .state = &ran };

	tr_test_latch_init(&ran, 1);
	mortal_init(&m);
	cr_assert_eq(tr_spawn_opts(sys, &o, &a), TR_OK);
	cr_assert_eq(tr_register(sys, "flaky", a), TR_OK);
	cr_assert_eq(tr_send(a, T_DATA, NULL, 0), TR_OK);
	cr_assert(tr_test_latch_wait(&ran, WAIT_S));
	/* the failure stops the actor just after the behaviour returned */
	{
		double end = tr_test_now() + WAIT_S;
		while (tr_whereis(sys, "flaky", &got) == TR_OK) {
			cr_assert(tr_ref_eq(got, a));
			cr_assert_lt(tr_test_now(), end, "name outlived its failed actor");
			sched_yield();
		}
	}
	assert_absent(sys, "flaky");
	b = spawn_mortal(sys, &m);
	cr_assert_eq(tr_register(sys, "flaky", b), TR_OK);
	assert_whereis(sys, "flaky", b);
	sys_finish(&sys);
	tr_test_latch_destroy(&ran);
	mortal_destroy(&m);
}

/* A reference from a lookup is as safe as any: after its actor stopped,
 * sending through it is TR_EDEAD and a counted dead letter, even once the
 * actor's slot has been reused by new actors. */
Test(registry, lookup_ref_stays_safe_after_stop)
{
	enum { FRESH = 256 };
	tr_system *sys = sys_start(2);
	static struct mortal fresh[FRESH];
	struct mortal m;
	tr_ref a, got = TR_REF_NONE;
	tr_stats before, after;
	unsigned stray = 0;

	mortal_init(&m);
	a = spawn_mortal(sys, &m);
	cr_assert_eq(tr_register(sys, "svc", a), TR_OK);
	cr_assert_eq(tr_whereis(sys, "svc", &got), TR_OK);
	stop_and_wait(a, &m);

	before = stats(sys);
	cr_assert_eq(send_to(got), TR_EDEAD);
	after = stats(sys);
	cr_assert_eq(after.dead_letters, before.dead_letters + 1);
	cr_assert_eq(after.sent, before.sent);

	/* new actors, some of which may take the old slot */
	for (int i = 0; i < FRESH; i++) {
		mortal_init(&fresh[i]);
		(void)spawn_mortal(sys, &fresh[i]);
	}
	for (int i = 0; i < 100; i++)
		cr_assert_eq(send_to(got), TR_EDEAD);
	after = stats(sys);
	cr_assert_eq(after.dead_letters, before.dead_letters + 101);
	assert_absent(sys, "svc");
	sys_finish(&sys);
	for (int i = 0; i < FRESH; i++) {
		stray += atomic_load(&fresh[i].got);
		mortal_destroy(&fresh[i]);
	}
	cr_assert_eq(stray, 0, "a stale lookup reached a new actor");
	cr_assert_eq(atomic_load(&m.got), 0);
	mortal_destroy(&m);
}

/* Readers look a name up and send through what they find while a writer
 * keeps rebinding it to fresh actors and stopping the old ones. Every send
 * must be TR_OK or TR_EDEAD, and no message may reach another incarnation. */
#define CHURN_ROUNDS 300
#define CHURN_READERS 3

static struct {
	tr_system *sys;
	atomic_bool done;
	pthread_barrier_t start;
} churn;

struct reader {
	uint64_t found, absent, ok, dead, other;
	int first_other;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	pthread_barrier_wait(&churn.start);
	while (!atomic_load(&churn.done)) {
		tr_ref ref;
		int rc = tr_whereis(churn.sys, "hot", &ref);

		if (rc == TR_ENOENT) {
			r->absent++;
			continue;
		}
		if (rc != TR_OK) {
			if (r->other++ == 0)
				r->first_other = rc;
			continue;
		}
		r->found++;
		rc = send_to(ref);
		if (rc == TR_OK)
			r->ok++;
		else if (rc == TR_EDEAD)
			r->dead++;
		else if (r->other++ == 0)
			r->first_other = rc;
	}
	return NULL;
}

Test(registry, whereis_races_stop_and_rebind)
{
	static struct mortal ms[CHURN_ROUNDS];
	struct reader rd[CHURN_READERS] = { { 0 } };
	pthread_t th[CHURN_READERS];
	uint64_t ok = 0, found = 0, got = 0, misrouted = 0;
	tr_stats st;

	churn.sys = sys_start(2);
	atomic_store(&churn.done, false);
	pthread_barrier_init(&churn.start, NULL, CHURN_READERS + 1);
	for (int i = 0; i < CHURN_READERS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
	pthread_barrier_wait(&churn.start);
	for (int i = 0; i < CHURN_ROUNDS; i++) {
		tr_ref r;

		mortal_init(&ms[i]);
		r = spawn_mortal(churn.sys, &ms[i]);
		/* the previous holder is stopped, perhaps not yet dead: the
		 * name is free only once it is */
		for (;;) {
			int rc = tr_register(churn.sys, "hot", r);
			if (rc == TR_OK)
				break;
			cr_assert_eq(rc, TR_EEXIST, "%s", tr_err_name(rc));
			sched_yield();
		}
		if (i % 3 == 0)
			sched_yield();
		cr_assert_eq(tr_stop(r), TR_OK);
	}
	atomic_store(&churn.done, true);
	for (int i = 0; i < CHURN_READERS; i++)
		pthread_join(th[i], NULL);
	st = sys_finish(&churn.sys);
	pthread_barrier_destroy(&churn.start);
	for (int i = 0; i < CHURN_READERS; i++) {
		cr_assert_eq(rd[i].other, 0, "reader %d: unexpected %s", i,
			     tr_err_name(rd[i].first_other));
		ok += rd[i].ok;
		found += rd[i].found;
	}
	for (int i = 0; i < CHURN_ROUNDS; i++) {
		got += atomic_load(&ms[i].got);
		misrouted += atomic_load(&ms[i].misrouted);
		cr_assert_eq(atomic_load(&ms[i].cleanups), 1);
		mortal_destroy(&ms[i]);
	}
	cr_assert_eq(misrouted, 0, "%llu messages reached another incarnation",
		     (unsigned long long)misrouted);
	cr_assert_eq(st.sent, ok);
	cr_assert_eq(st.delivered + st.undelivered, ok);
	cr_assert_eq(st.delivered, got);
	cr_log_info("whereis race: %llu found, %llu sent", (unsigned long long)found,
		    (unsigned long long)ok);
}

/* Many threads register different actors under one name at once: exactly
 * one wins each round. */
#define REG_THREADS 8
#define REG_ROUNDS 50

static struct {
	tr_system *sys;
	pthread_barrier_t go, done;
	tr_ref refs[REG_THREADS];
	int rc[REG_ROUNDS][REG_THREADS];
} reg;

static void *register_main(void *arg)
{
	int t = (int)(intptr_t)arg;

	for (int round = 0; round < REG_ROUNDS; round++) {
		char name[32];

		snprintf(name, sizeof(name), "contested.%d", round);
		pthread_barrier_wait(&reg.go);
		reg.rc[round][t] = tr_register(reg.sys, name, reg.refs[t]);
		pthread_barrier_wait(&reg.done);
	}
	return NULL;
}

Test(registry, concurrent_register_one_winner)
{
	pthread_t th[REG_THREADS];

	reg.sys = sys_start(2);
	pthread_barrier_init(&reg.go, NULL, REG_THREADS);
	pthread_barrier_init(&reg.done, NULL, REG_THREADS);
	for (int t = 0; t < REG_THREADS; t++)
		reg.refs[t] = spawn_idle(reg.sys);
	for (int t = 0; t < REG_THREADS; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, register_main, (void *)(intptr_t)t), 0);
	for (int t = 0; t < REG_THREADS; t++)
		pthread_join(th[t], NULL);
	for (int round = 0; round < REG_ROUNDS; round++) {
		char name[32];
		int winners = 0, winner = -1;

		for (int t = 0; t < REG_THREADS; t++) {
			if (reg.rc[round][t] == TR_OK) {
				winners++;
				winner = t;
			} else {
				cr_assert_eq(reg.rc[round][t], TR_EEXIST, "round %d thread %d: %s",
					     round, t, tr_err_name(reg.rc[round][t]));
			}
		}
		cr_assert_eq(winners, 1, "round %d: %d winners", round, winners);
		snprintf(name, sizeof(name), "contested.%d", round);
		assert_whereis(reg.sys, name, reg.refs[winner]);
	}
	sys_finish(&reg.sys);
	pthread_barrier_destroy(&reg.go);
	pthread_barrier_destroy(&reg.done);
}

/* ---- spawn-or-get ---- */

#define SN_THREADS 8
#define SN_NAMES 100

struct named {
	atomic_uint inits;
	atomic_uint cleanups;
	atomic_int fail_first; /* the first init returns this if non-zero */
};

static int named_init(void *state)
{
	struct named *n = state;
	unsigned k = atomic_fetch_add(&n->inits, 1);
	int f = atomic_load(&n->fail_first);

	/* give racers a chance to pile up on the pending name */
	sched_yield();
	return k == 0 ? f : 0;
}

static void named_cleanup(void *state, int reason)
{
	(void)reason;
	atomic_fetch_add(&((struct named *)state)->cleanups, 1);
}

static tr_actor_opts named_opts(struct named *n)
{
	tr_actor_opts o = {
		.behaviour = idle_beh,
		.state = n,
		.init = named_init,
		.cleanup = named_cleanup,
	};
	return o;
}

static struct {
	tr_system *sys;
	pthread_barrier_t start;
	struct named names[SN_NAMES];
	tr_ref refs[SN_THREADS][SN_NAMES];
	int rc[SN_THREADS][SN_NAMES];
} sn;

static void *spawn_named_main(void *arg)
{
	int t = (int)(intptr_t)arg;

	pthread_barrier_wait(&sn.start);
	for (int k = 0; k < SN_NAMES; k++) {
		/* threads walk the names from different places and directions */
		int i = (t & 1) ? (t * 13 + k) % SN_NAMES : (SN_NAMES - 1 - (t * 7 + k) % SN_NAMES);
		tr_actor_opts o = named_opts(&sn.names[i]);
		char name[32];

		snprintf(name, sizeof(name), "worker-%d", i);
		sn.rc[t][i] = tr_spawn_named(sn.sys, name, &o, &sn.refs[t][i]);
	}
	return NULL;
}

Test(registry, spawn_named_races_make_one_actor_per_name)
{
	pthread_t th[SN_THREADS];
	tr_stats st;

	memset(&sn, 0, sizeof(sn));
	sn.sys = sys_start(2);
	pthread_barrier_init(&sn.start, NULL, SN_THREADS);
	for (int t = 0; t < SN_THREADS; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, spawn_named_main, (void *)(intptr_t)t),
			     0);
	for (int t = 0; t < SN_THREADS; t++)
		pthread_join(th[t], NULL);

	for (int i = 0; i < SN_NAMES; i++) {
		char name[32];

		snprintf(name, sizeof(name), "worker-%d", i);
		cr_assert_eq(atomic_load(&sn.names[i].inits), 1, "%s: init ran %u times", name,
			     atomic_load(&sn.names[i].inits));
		for (int t = 0; t < SN_THREADS; t++) {
			cr_assert_eq(sn.rc[t][i], TR_OK, "%s thread %d: %s", name, t,
				     tr_err_name(sn.rc[t][i]));
			cr_assert(tr_ref_eq(sn.refs[t][i], sn.refs[0][i]),
				  "%s: thread %d got another actor", name, t);
		}
		assert_whereis(sn.sys, name, sn.refs[0][i]);
	}
	st = stats(sn.sys);
	cr_assert_eq(st.spawned, SN_NAMES);
	cr_assert_eq(st.alive, SN_NAMES);
	st = sys_finish(&sn.sys);
	for (int i = 0; i < SN_NAMES; i++)
		cr_assert_eq(atomic_load(&sn.names[i].cleanups), 1);
	cr_assert_eq(st.spawned, SN_NAMES);
	pthread_barrier_destroy(&sn.start);
}

Test(registry, spawn_named_returns_existing_binding)
{
	tr_system *sys = sys_start(2);
	struct named n = { 0 };
	tr_actor_opts o = named_opts(&n);
	tr_ref a = spawn_idle(sys), got = TR_REF_NONE, again = TR_REF_NONE;

	cr_assert_eq(tr_register(sys, "taken", a), TR_OK);
	cr_assert_eq(tr_spawn_named(sys, "taken", &o, &got), TR_OK);
	cr_assert(tr_ref_eq(got, a));
	cr_assert_eq(atomic_load(&n.inits), 0, "spawned although the name was bound");

	cr_assert_eq(tr_spawn_named(sys, "fresh", &o, &got), TR_OK);
	cr_assert_eq(atomic_load(&n.inits), 1);
	cr_assert_eq(tr_spawn_named(sys, "fresh", &o, &again), TR_OK);
	cr_assert(tr_ref_eq(got, again));
	cr_assert_eq(atomic_load(&n.inits), 1);
	assert_whereis(sys, "fresh", got);
	/* a spawned name behaves as a registered one */
	cr_assert_eq(tr_register(sys, "fresh", a), TR_EEXIST);
	cr_assert_eq(tr_unregister(sys, "fresh"), TR_OK);
	assert_absent(sys, "fresh");
	sys_finish(&sys);
}

Test(registry, spawn_named_replaces_stopped_actor)
{
	tr_system *sys = sys_start(2);
	struct named n = { 0 };
	struct mortal m;
	tr_actor_opts o = named_opts(&n);
	tr_actor_opts om = { .behaviour = mortal_beh, .state = &m, .cleanup = mortal_cleanup };
	tr_ref a, b;

	mortal_init(&m);
	cr_assert_eq(tr_spawn_named(sys, "phoenix", &om, &a), TR_OK);
	stop_and_wait(a, &m);
	assert_absent(sys, "phoenix");
	cr_assert_eq(tr_spawn_named(sys, "phoenix", &o, &b), TR_OK);
	cr_assert(!tr_ref_eq(a, b));
	cr_assert_eq(atomic_load(&n.inits), 1);
	assert_whereis(sys, "phoenix", b);
	cr_assert_eq(send_to(a), TR_EDEAD);
	sys_finish(&sys);
	mortal_destroy(&m);
}

Test(registry, spawn_named_init_failure_frees_name)
{
	tr_system *sys = sys_start(2);
	struct named bad = { 0 }, good = { 0 };
	tr_actor_opts ob, og;
	tr_ref r = TR_REF_NONE, other;
	tr_stats st;

	atomic_store(&bad.fail_first, 42);
	ob = named_opts(&bad);
	og = named_opts(&good);
	cr_assert_eq(tr_spawn_named(sys, "doomed", &ob, &r), 42,
		     "spawn_named must return the init hook's value");
	cr_assert_eq(atomic_load(&bad.inits), 1);
	assert_absent(sys, "doomed");
	cr_assert_eq(tr_unregister(sys, "doomed"), TR_ENOENT);
	st = stats(sys);
	cr_assert_eq(st.spawned, 0);
	cr_assert_eq(st.alive, 0);

	/* the name is free for a plain registration ... */
	other = spawn_idle(sys);
	cr_assert_eq(tr_register(sys, "doomed", other), TR_OK);
	assert_whereis(sys, "doomed", other);
	cr_assert_eq(tr_unregister(sys, "doomed"), TR_OK);
	/* ... and for the next spawn_named */
	cr_assert_eq(tr_spawn_named(sys, "doomed", &og, &r), TR_OK);
	cr_assert_eq(atomic_load(&good.inits), 1);
	assert_whereis(sys, "doomed", r);

	/* negative codes too */
	atomic_store(&bad.inits, 0);
	atomic_store(&bad.fail_first, TR_EFAILED);
	cr_assert_eq(tr_spawn_named(sys, "doomed-too", &ob, &r), TR_EFAILED);
	assert_absent(sys, "doomed-too");
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&bad.cleanups), 0, "cleanup ran for a discarded actor");
	cr_assert_eq(atomic_load(&good.cleanups), 1);
}

/* Racers wait on the pending name of a spawn whose init fails: the failing
 * caller alone gets the error, one of the others then spawns the actor and
 * all of them get it. */
static struct {
	tr_system *sys;
	pthread_barrier_t start;
	struct named n;
	tr_ref refs[SN_THREADS];
	int rc[SN_THREADS];
} sf;

static void *spawn_fail_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	tr_actor_opts o = named_opts(&sf.n);

	pthread_barrier_wait(&sf.start);
	sf.rc[t] = tr_spawn_named(sf.sys, "contended", &o, &sf.refs[t]);
	return NULL;
}

Test(registry, spawn_named_init_failure_under_contention)
{
	pthread_t th[SN_THREADS];
	int failed = 0, ok = 0, first_ok = -1;

	memset(&sf, 0, sizeof(sf));
	atomic_store(&sf.n.fail_first, 99);
	sf.sys = sys_start(2);
	pthread_barrier_init(&sf.start, NULL, SN_THREADS);
	for (int t = 0; t < SN_THREADS; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, spawn_fail_main, (void *)(intptr_t)t), 0);
	for (int t = 0; t < SN_THREADS; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < SN_THREADS; t++) {
		if (sf.rc[t] == 99) {
			failed++;
		} else {
			cr_assert_eq(sf.rc[t], TR_OK, "thread %d: %s", t, tr_err_name(sf.rc[t]));
			if (first_ok < 0)
				first_ok = t;
			cr_assert(tr_ref_eq(sf.refs[t], sf.refs[first_ok]));
			ok++;
		}
	}
	cr_assert_eq(failed, 1, "%d callers got the init failure", failed);
	cr_assert_eq(atomic_load(&sf.n.inits), ok ? 2 : 1);
	if (ok)
		assert_whereis(sf.sys, "contended", sf.refs[first_ok]);
	sys_finish(&sf.sys);
	pthread_barrier_destroy(&sf.start);
	cr_assert_eq(atomic_load(&sf.n.cleanups), ok ? 1 : 0);
}

/* While its spawn is in progress a name is neither found, nor free, nor
 * removable: seen from the new actor's own init hook. */
struct pending_probe {
	tr_system *sys;
	int whereis_rc, register_rc, unregister_rc;
	tr_ref self;
};

static int pending_init(void *state)
{
	struct pending_probe *p = state;
	tr_ref r;

	p->self = tr_self();
	p->whereis_rc = tr_whereis(p->sys, "pending", &r);
	p->register_rc = tr_register(p->sys, "pending", p->self);
	p->unregister_rc = tr_unregister(p->sys, "pending");
	return 0;
}

Test(registry, name_is_pending_during_spawn_named)
{
	tr_system *sys = sys_start(2);
	struct pending_probe p = { .sys = sys };
	tr_actor_opts o = { .behaviour = idle_beh, .state = &p, .init = pending_init };
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_named(sys, "pending", &o, &r), TR_OK);
	cr_assert(tr_ref_eq(r, p.self));
	cr_assert_eq(p.whereis_rc, TR_ENOENT, "whereis of a pending name: %s",
		     tr_err_name(p.whereis_rc));
	cr_assert_eq(p.register_rc, TR_EEXIST, "register of a pending name: %s",
		     tr_err_name(p.register_rc));
	cr_assert_eq(p.unregister_rc, TR_ENOENT, "unregister of a pending name: %s",
		     tr_err_name(p.unregister_rc));
	assert_whereis(sys, "pending", r);
	sys_finish(&sys);
}

/* ---- errors ---- */

Test(registry, invalid_arguments)
{
	tr_system *sys = sys_start(1), *other = sys_start(1);
	tr_actor_opts o = { .behaviour = idle_beh };
	tr_actor_opts nobeh = { .behaviour = NULL };
	char longname[TR_NAME_MAX + 2];
	tr_ref a = spawn_idle(sys), foreign = spawn_idle(other), r;

	memset(longname, 'x', TR_NAME_MAX + 1);
	longname[TR_NAME_MAX + 1] = '\0';

	cr_assert_eq(tr_register(NULL, "n", a), TR_EINVAL);
	cr_assert_eq(tr_register(sys, NULL, a), TR_EINVAL);
	cr_assert_eq(tr_register(sys, "", a), TR_EINVAL);
	cr_assert_eq(tr_register(sys, longname, a), TR_EINVAL);
	cr_assert_eq(tr_register(sys, "n", TR_REF_NONE), TR_EINVAL);
	cr_assert_eq(tr_register(sys, "n", foreign), TR_EINVAL, "ref of another system");
	assert_absent(sys, "n");

	cr_assert_eq(tr_unregister(NULL, "n"), TR_EINVAL);
	cr_assert_eq(tr_unregister(sys, NULL), TR_EINVAL);
	cr_assert_eq(tr_unregister(sys, ""), TR_EINVAL);
	cr_assert_eq(tr_unregister(sys, longname), TR_EINVAL);
	cr_assert_eq(tr_unregister(sys, "never-bound"), TR_ENOENT);

	cr_assert_eq(tr_whereis(NULL, "n", &r), TR_EINVAL);
	cr_assert_eq(tr_whereis(sys, NULL, &r), TR_EINVAL);
	cr_assert_eq(tr_whereis(sys, "", &r), TR_EINVAL);
	cr_assert_eq(tr_whereis(sys, longname, &r), TR_EINVAL);
	cr_assert_eq(tr_register(sys, "n", a), TR_OK);
	cr_assert_eq(tr_whereis(sys, "n", NULL), TR_EINVAL);
	cr_assert_eq(tr_whereis(sys, "never-bound", &r), TR_ENOENT);

	cr_assert_eq(tr_spawn_named(NULL, "s", &o, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, NULL, &o, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, "", &o, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, longname, &o, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, "s", NULL, &r), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, "s", &o, NULL), TR_EINVAL);
	cr_assert_eq(tr_spawn_named(sys, "s", &nobeh, &r), TR_EINVAL);
	assert_absent(sys, "s");
	/* the failed spawn left the name free */
	cr_assert_eq(tr_spawn_named(sys, "s", &o, &r), TR_OK);
	assert_whereis(sys, "s", r);
	sys_finish(&other);
	sys_finish(&sys);
}

Test(registry, stale_ref_is_edead)
{
	tr_system *sys = sys_start(2);
	struct mortal m;
	tr_ref a;
	tr_stats before, after;

	mortal_init(&m);
	a = spawn_mortal(sys, &m);
	stop_and_wait(a, &m);
	before = stats(sys);
	cr_assert_eq(tr_register(sys, "late", a), TR_EDEAD);
	after = stats(sys);
	cr_assert_eq(after.sent, before.sent);
	assert_absent(sys, "late");
	sys_finish(&sys);
	mortal_destroy(&m);
}

Test(registry, after_shutdown)
{
	tr_system *sys = sys_start(2);
	struct named n = { 0 };
	tr_actor_opts o = named_opts(&n);
	tr_ref a = spawn_idle(sys), r = TR_REF_NONE;

	cr_assert_eq(tr_register(sys, "old", a), TR_OK);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	/* its actor stopped with the system: the name went with it */
	assert_absent(sys, "old");
	cr_assert_eq(tr_register(sys, "new", a), TR_ESHUTDOWN);
	cr_assert_eq(tr_register(sys, "old", a), TR_ESHUTDOWN);
	cr_assert_eq(tr_spawn_named(sys, "new", &o, &r), TR_ESHUTDOWN);
	cr_assert_eq(tr_spawn_named(sys, "old", &o, &r), TR_ESHUTDOWN);
	cr_assert_eq(atomic_load(&n.inits), 0);
	assert_absent(sys, "new");
	assert_absent(sys, "old");
	cr_assert_eq(tr_unregister(sys, "new"), TR_ENOENT);
	/* still validated */
	cr_assert_eq(tr_register(sys, "", a), TR_EINVAL);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
}

/* Thousands of bindings, half of them removed, the rest freed by destroy
 * (ASan/LSan catch leaks and double frees). In its cleanup hook an actor is
 * already stopped (sends to it fail), so its own name no longer resolves. */
struct lookup_in_cleanup {
	tr_system *sys;
	int rc;
};

static void lookup_cleanup(void *state, int reason)
{
	struct lookup_in_cleanup *l = state;
	tr_ref r;

	(void)reason;
	l->rc = tr_whereis(l->sys, "self", &r);
}

Test(registry, many_bindings_freed_at_destroy)
{
	enum { N = 2000 };
	tr_system *sys = sys_start(2);
	struct lookup_in_cleanup l = { .sys = sys, .rc = 12345 };
	tr_actor_opts o = { .behaviour = idle_beh, .state = &l, .cleanup = lookup_cleanup };
	tr_ref self;
	char name[32];

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "bulk.%d", i);
		cr_assert_eq(tr_register(sys, name, spawn_idle(sys)), TR_OK);
	}
	for (int i = 0; i < N; i += 2) {
		snprintf(name, sizeof(name), "bulk.%d", i);
		cr_assert_eq(tr_unregister(sys, name), TR_OK);
	}
	for (int i = 0; i < N; i++) {
		tr_ref r;

		snprintf(name, sizeof(name), "bulk.%d", i);
		cr_assert_eq(tr_whereis(sys, name, &r), i % 2 ? TR_OK : TR_ENOENT, "%s", name);
	}
	cr_assert_eq(tr_spawn_opts(sys, &o, &self), TR_OK);
	cr_assert_eq(tr_register(sys, "self", self), TR_OK);
	sys_finish(&sys);
	cr_assert_eq(l.rc, TR_ENOENT, "whereis of a stopping actor's name: %s", tr_err_name(l.rc));
}
