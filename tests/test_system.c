/*
 * Unit tests for troupe/system.h: configuration, the life cycle and its
 * state errors, several systems in one process, what each shutdown mode
 * does with accepted messages, destroy, and the counters.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "troupe.h"
#include "support.h"

#define WAIT_S 30

TestSuite(system, .timeout = 120);

enum {
	T_DATA = 0x300,
	T_FLUSH,
	T_GO,
};

/* ---- helpers ---- */

static tr_system *sys_new(unsigned workers)
{
	tr_config cfg;
	tr_system *sys = NULL;
	int rc;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = workers;
	rc = tr_system_new(&cfg, &sys);
	cr_assert_eq(rc, TR_OK, "tr_system_new: %s", tr_err_name(rc));
	cr_assert_not_null(sys);
	return sys;
}

static tr_system *sys_start(unsigned workers)
{
	tr_system *sys = sys_new(workers);

	cr_assert_eq(tr_system_start(sys), TR_OK);
	return sys;
}

static tr_stats stats_of(const tr_system *sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	return st;
}

static tr_stats sys_finish(tr_system **sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_shutdown(*sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	st = stats_of(*sys);
	tr_system_destroy(sys);
	cr_assert_null(*sys);
	return st;
}

static void send_ok(tr_ref to, uint32_t type)
{
	int rc = tr_send(to, type, NULL, 0);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

/* Counters are summed from per-worker parts while workers run, so a test
 * that reads them mid-run waits for them to settle on the expected value. */
#define WAIT_STATS(sys, st, cond)                                              \
	do {                                                                   \
		double end_ = tr_test_now() + WAIT_S;                          \
		for (;;) {                                                     \
			(st) = stats_of(sys);                                  \
			if (cond)                                              \
				break;                                         \
			cr_assert_lt(tr_test_now(), end_,                      \
				     "counters never reached " #cond);         \
			sched_yield();                                         \
		}                                                              \
	} while (0)

/* ---- an actor that reports its life ---- */

struct life {
	atomic_ulong msgs;       /* T_DATA delivered */
	atomic_int cleanups;
	int reason;
	pthread_t cleanup_thread;
	tr_system *self_sys;     /* tr_self_system() as the behaviour saw it */
	tr_ref last_sender;      /* of the last message an actor sent */
	tr_test_latch got;       /* one count per T_DATA */
	tr_test_latch flushed;   /* one count per T_FLUSH */
	tr_test_latch cleaned;
};

static void life_init(struct life *l, uint64_t expect_msgs)
{
	memset(l, 0, sizeof(*l));
	l->reason = 12345; /* no TR_* code */
	tr_test_latch_init(&l->got, expect_msgs);
	tr_test_latch_init(&l->flushed, 1);
	tr_test_latch_init(&l->cleaned, 1);
}

static int life_beh(void *state, tr_msg *m)
{
	struct life *l = state;

	l->self_sys = tr_self_system();
	if (!tr_ref_is_none(tr_msg_sender(m)))
		l->last_sender = tr_msg_sender(m);
	if (tr_msg_type(m) == T_FLUSH) {
		tr_test_latch_count_down(&l->flushed);
	} else {
		atomic_fetch_add(&l->msgs, 1);
		tr_test_latch_count_down(&l->got);
	}
	return 0;
}

static void life_cleanup(void *state, int reason)
{
	struct life *l = state;

	l->reason = reason;
	l->cleanup_thread = pthread_self();
	atomic_fetch_add(&l->cleanups, 1);
	tr_test_latch_count_down(&l->cleaned);
}

static tr_ref spawn_life(tr_system *sys, struct life *l)
{
	tr_actor_opts o = { .behaviour = life_beh, .state = l, .cleanup = life_cleanup };
	tr_ref r = TR_REF_NONE;
	int rc = tr_spawn_opts(sys, &o, &r);

	cr_assert_eq(rc, TR_OK, "tr_spawn_opts: %s", tr_err_name(rc));
	return r;
}

static void flush(struct life *l, tr_ref r)
{
	send_ok(r, T_FLUSH);
	cr_assert(tr_test_latch_wait(&l->flushed, WAIT_S), "flush never arrived");
}

static unsigned cpus_allowed(void)
{
	cpu_set_t set;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	return (unsigned)CPU_COUNT(&set);
}

/* ---- configuration ---- */

Test(system, config_init_defaults)
{
	tr_config cfg;
	tr_system *a = NULL, *b = NULL;

	memset(&cfg, 0xA5, sizeof(cfg));
	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cr_assert_eq(cfg.workers, 0, "default: one worker per allowed CPU");
	cr_assert(cfg.batch == 0 || cfg.batch == TR_BATCH_DEFAULT, "batch %u", cfg.batch);
	cr_assert_eq(cfg.mailbox_capacity, 0, "mailboxes are unbounded by default");
	cr_assert(cfg.overflow == TR_OVERFLOW_REJECT || cfg.overflow == TR_OVERFLOW_WAIT);
	cr_assert_neq(cfg.overflow_wait_ms, 0xA5A5A5A5u, "overflow_wait_ms left unset");
	cr_assert_neq(cfg.spin_us, 0xA5A5A5A5u, "spin_us left unset");
	cr_assert_eq(tr_config_init(NULL), TR_EINVAL);

	/* The defaults and a NULL config make the same system. */
	cr_assert_eq(tr_system_new(&cfg, &a), TR_OK);
	cr_assert_eq(tr_system_new(NULL, &b), TR_OK);
	cr_assert_eq(tr_system_workers(a), tr_system_workers(b));
	tr_system_destroy(&a);
	tr_system_destroy(&b);
}

Test(system, null_config_runs_one_worker_per_cpu)
{
	tr_system *sys = NULL;
	struct life l;
	tr_ref r;

	cr_assert_eq(tr_system_new(NULL, &sys), TR_OK);
	cr_assert_not_null(sys);
	cr_assert_eq(tr_system_workers(sys), cpus_allowed());
	cr_assert_eq(tr_system_start(sys), TR_OK);
	life_init(&l, 1);
	r = spawn_life(sys, &l);
	send_ok(r, T_DATA);
	cr_assert(tr_test_latch_wait(&l.got, WAIT_S));
	sys_finish(&sys);
}

Test(system, new_rejects_bad_config)
{
	tr_config cfg;
	tr_system *sys = NULL;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = TR_WORKERS_MAX + 1;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_EINVAL);
	cr_assert_null(sys);
	cfg.workers = 1;
	cr_assert_eq(tr_system_new(&cfg, NULL), TR_EINVAL);
	cr_assert_eq(tr_system_new(NULL, NULL), TR_EINVAL);

	/* The maximum itself is fine (not started: no threads needed). */
	cfg.workers = TR_WORKERS_MAX;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	cr_assert_eq(tr_system_workers(sys), TR_WORKERS_MAX);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
}

Test(system, workers_count)
{
	tr_system *sys = sys_new(3);

	cr_assert_eq(tr_system_workers(sys), 3);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	cr_assert_eq(tr_system_workers(sys), 3);
	cr_assert_eq(tr_system_workers(NULL), 0);
	sys_finish(&sys);
}

/* ---- life-cycle state errors ---- */

Test(system, start_twice_is_estate)
{
	tr_system *sys = sys_start(1);

	cr_assert_eq(tr_system_start(sys), TR_ESTATE);
	cr_assert_eq(tr_system_start(NULL), TR_EINVAL);
	sys_finish(&sys);
}

Test(system, start_after_shutdown_is_estate)
{
	tr_system *ran = sys_start(1);
	tr_system *never = sys_new(1);

	cr_assert_eq(tr_system_shutdown(ran, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_start(ran), TR_ESTATE);
	cr_assert_eq(tr_system_shutdown(never, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_start(never), TR_ESTATE);
	tr_system_destroy(&ran);
	tr_system_destroy(&never);
}

Test(system, spawn_after_shutdown_is_eshutdown)
{
	tr_system *sys = sys_start(1);
	struct life l;
	tr_ref r = TR_REF_NONE;

	life_init(&l, 0);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_spawn(sys, life_beh, &l, &r), TR_ESHUTDOWN);
	tr_system_destroy(&sys);
}

Test(system, actors_spawned_before_start_run_after_it)
{
	tr_system *sys = sys_new(2);
	struct life l;
	tr_ref r;

	life_init(&l, 1);
	r = spawn_life(sys, &l);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	send_ok(r, T_DATA);
	cr_assert(tr_test_latch_wait(&l.got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(l.reason, TR_ESHUTDOWN);
}

/* ---- several systems ---- */

struct bridge {
	tr_ref to;          /* an actor of the other system */
	int rc;
	tr_test_latch done;
};

static int bridge_beh(void *state, tr_msg *m)
{
	struct bridge *b = state;

	(void)m;
	b->rc = tr_send(b->to, T_DATA, NULL, 0);
	tr_test_latch_count_down(&b->done);
	return 0;
}

Test(system, two_independent_systems)
{
	enum { NA = 100, NB = 300 };
	tr_system *a = sys_start(1), *b = sys_start(2);
	struct life la, lb;
	struct bridge br = { .rc = 1 };
	tr_ref ra, rb, rbr;
	tr_stats sa, sb;

	cr_assert_neq(a, b);
	cr_assert_eq(tr_system_workers(a), 1);
	cr_assert_eq(tr_system_workers(b), 2);
	life_init(&la, NA);
	life_init(&lb, NB + 1);
	ra = spawn_life(a, &la);
	rb = spawn_life(b, &lb);
	for (int i = 0; i < NA; i++)
		send_ok(ra, T_DATA);
	for (int i = 0; i < NB; i++)
		send_ok(rb, T_DATA);
	cr_assert(tr_test_latch_wait(&la.got, WAIT_S));

	/* An actor of one system can message an actor of the other. */
	br.to = rb;
	tr_test_latch_init(&br.done, 1);
	cr_assert_eq(tr_spawn(a, bridge_beh, &br, &rbr), TR_OK);
	send_ok(rbr, T_GO);
	cr_assert(tr_test_latch_wait(&br.done, WAIT_S));
	cr_assert_eq(br.rc, TR_OK, "%s", tr_err_name(br.rc));
	cr_assert(tr_test_latch_wait(&lb.got, WAIT_S));
	cr_assert(tr_ref_eq(lb.last_sender, rbr));
	cr_assert_eq(la.self_sys, a);
	cr_assert_eq(lb.self_sys, b);

	/* Shutting one down leaves the other running. */
	cr_assert_eq(tr_system_shutdown(a, TR_SHUTDOWN_GRACEFUL), TR_OK);
	sa = stats_of(a);
	cr_assert_eq(tr_send(ra, T_DATA, NULL, 0), TR_ESHUTDOWN);
	tr_system_destroy(&a);
	cr_assert_eq(tr_send(ra, T_DATA, NULL, 0), TR_EDEAD);
	flush(&lb, rb);
	cr_assert_eq(stats_of(b).alive, 1, "b's actor stopped with a");
	sb = sys_finish(&b);

	cr_assert_eq(la.reason, TR_ESHUTDOWN);
	cr_assert_eq(lb.reason, TR_ESHUTDOWN);
	cr_assert_eq(atomic_load(&la.msgs), NA);
	cr_assert_eq(atomic_load(&lb.msgs), NB + 1);
	cr_assert_eq(sa.spawned, 2);
	cr_assert_eq(sb.spawned, 1);
	cr_assert_eq(sa.delivered + sb.delivered, NA + 1 + NB + 1 + 1,
		     "every message counted once, in one system");
}

/* The plainest use of two systems: tear them down one after the other from
 * the same thread. The second shutdown must not touch the first system's
 * freed memory (ASan reports it if the runtime does). */
Test(system, destroy_two_systems_in_turn)
{
	tr_system *a = sys_start(1), *b = sys_start(1);
	struct life la, lb;

	life_init(&la, 0);
	life_init(&lb, 0);
	spawn_life(a, &la);
	spawn_life(b, &lb);
	tr_system_destroy(&a);
	tr_system_destroy(&b);
	cr_assert_eq(atomic_load(&la.cleanups), 1);
	cr_assert_eq(atomic_load(&lb.cleanups), 1);
}

/*
 * A reference into a destroyed system must not reach an actor of a later
 * system that took over both its system slot and its actor slot. Systems are
 * created (unstarted, cheap) until one lands in the old system slot.
 */
Test(system, stale_ref_into_destroyed_system)
{
	tr_system *old = sys_start(1), *fresh = NULL;
	struct life lo, ln;
	tr_ref ro, rn = TR_REF_NONE;
	bool same_slots = false;

	life_init(&lo, 0);
	ro = spawn_life(old, &lo);
	tr_system_destroy(&old);
	for (unsigned i = 0; i < 2 * TR_SYSTEMS_MAX && !same_slots; i++) {
		fresh = sys_new(1);
		life_init(&ln, 0);
		rn = spawn_life(fresh, &ln);
		same_slots = (rn.id >> 56) == (ro.id >> 56) &&
			     (rn.id & 0xffffffu) == (ro.id & 0xffffffu);
		if (!same_slots)
			tr_system_destroy(&fresh);
	}
	cr_assert(same_slots, "no new system took the old system slot");
	cr_assert_eq(tr_system_start(fresh), TR_OK);
	cr_assert(!tr_ref_eq(ro, rn), "new actor got the stale reference %#llx",
		  (unsigned long long)ro.id);
	cr_assert_eq(tr_send(ro, T_DATA, NULL, 0), TR_EDEAD);
	cr_assert_eq(tr_stop(ro), TR_EDEAD);
	flush(&ln, rn);
	cr_assert_eq(atomic_load(&ln.msgs), 0, "stale ref reached the new system's actor");
	sys_finish(&fresh);
	cr_assert_eq(ln.reason, TR_ESHUTDOWN, "stale ref stopped the new system's actor");
}

Test(system, systems_limit)
{
	static tr_system *all[TR_SYSTEMS_MAX];
	tr_system *extra = NULL;

	for (unsigned i = 0; i < TR_SYSTEMS_MAX; i++)
		cr_assert_eq(tr_system_new(NULL, &all[i]), TR_OK, "system %u", i);
	cr_assert_eq(tr_system_new(NULL, &extra), TR_ELIMIT);
	cr_assert_null(extra);
	tr_system_destroy(&all[0]);
	cr_assert_eq(tr_system_new(NULL, &extra), TR_OK, "a freed system slot is reusable");
	tr_system_destroy(&extra);
	for (unsigned i = 1; i < TR_SYSTEMS_MAX; i++)
		tr_system_destroy(&all[i]);
}

/* ---- shutdown modes ---- */

/*
 * A ring of forwarders: each message hops on until its budget runs out, so
 * workers keep sending while the shutdown drains. Every send's result is
 * recorded, giving exact expectations for the counters.
 */
#define RING 4

struct fwd {
	tr_ref next;
	unsigned long got;
	unsigned long fwd_ok, fwd_refused, fwd_other;
	atomic_int cleanups;
	int reason;
};

static int fwd_beh(void *state, tr_msg *m)
{
	struct fwd *f = state;
	uint32_t hops;
	int rc;

	f->got++;
	memcpy(&hops, tr_msg_data(m), sizeof(hops));
	if (hops == 0)
		return 0;
	hops--;
	rc = tr_send(f->next, T_DATA, &hops, sizeof(hops));
	if (rc == TR_OK)
		f->fwd_ok++;
	else if (rc == TR_ESHUTDOWN)
		f->fwd_refused++;
	else
		f->fwd_other++;
	return 0;
}

static void fwd_cleanup(void *state, int reason)
{
	struct fwd *f = state;

	f->reason = reason;
	atomic_fetch_add(&f->cleanups, 1);
}

struct ring_totals {
	uint64_t got, fwd_ok, fwd_refused, fwd_other;
};

/* Loads a ring, shuts down with `mode` at once and checks each actor was
 * cleaned up once with TR_ESHUTDOWN. Returns the counters and totals. */
static tr_stats run_ring(tr_shutdown_mode mode, uint64_t *main_sent, struct ring_totals *tot)
{
	enum { PER = 3000, HOPS = 3 };
	tr_system *sys = sys_start(2);
	struct fwd f[RING];
	tr_ref r[RING];
	tr_stats st;

	memset(f, 0, sizeof(f));
	for (int i = 0; i < RING; i++) {
		tr_actor_opts o = {
			.behaviour = fwd_beh,
			.state = &f[i],
			.cleanup = fwd_cleanup,
		};

		cr_assert_eq(tr_spawn_opts(sys, &o, &r[i]), TR_OK);
	}
	for (int i = 0; i < RING; i++)
		f[i].next = r[(i + 1) % RING];
	*main_sent = 0;
	for (int n = 0; n < PER; n++) {
		for (int i = 0; i < RING; i++) {
			uint32_t hops = HOPS;

			cr_assert_eq(tr_send(r[i], T_DATA, &hops, sizeof(hops)), TR_OK);
			++*main_sent;
		}
	}
	cr_assert_eq(tr_system_shutdown(sys, mode), TR_OK);
	st = stats_of(sys);
	tr_system_destroy(&sys);

	memset(tot, 0, sizeof(*tot));
	for (int i = 0; i < RING; i++) {
		cr_assert_eq(atomic_load(&f[i].cleanups), 1, "actor %d", i);
		cr_assert_eq(f[i].reason, TR_ESHUTDOWN, "actor %d: reason %d", i, f[i].reason);
		tot->got += f[i].got;
		tot->fwd_ok += f[i].fwd_ok;
		tot->fwd_refused += f[i].fwd_refused;
		tot->fwd_other += f[i].fwd_other;
	}
	cr_assert_eq(tot->fwd_other, 0, "a forward failed with neither OK nor ESHUTDOWN");
	cr_assert_eq(st.spawned, RING);
	cr_assert_eq(st.stopped, RING);
	cr_assert_eq(st.alive, 0);
	return st;
}

Test(system, graceful_shutdown_delivers_every_accepted_message)
{
	struct ring_totals t;
	uint64_t main_sent;
	tr_stats st = run_ring(TR_SHUTDOWN_GRACEFUL, &main_sent, &t);

	cr_assert_eq(st.sent, main_sent + t.fwd_ok);
	cr_assert_eq(st.delivered, st.sent, "sent %llu, delivered %llu",
		     (unsigned long long)st.sent, (unsigned long long)st.delivered);
	cr_assert_eq(st.undelivered, 0);
	cr_assert_eq(t.got, st.delivered);
	cr_assert_eq(st.dead_letters, t.fwd_refused);
}

Test(system, immediate_shutdown_accounts_every_message)
{
	struct ring_totals t;
	uint64_t main_sent;
	tr_stats st = run_ring(TR_SHUTDOWN_IMMEDIATE, &main_sent, &t);

	cr_assert_eq(st.sent, main_sent + t.fwd_ok);
	cr_assert_eq(st.sent, st.delivered + st.undelivered,
		     "sent %llu != delivered %llu + undelivered %llu",
		     (unsigned long long)st.sent, (unsigned long long)st.delivered,
		     (unsigned long long)st.undelivered);
	cr_assert_eq(t.got, st.delivered);
	cr_assert_eq(st.dead_letters, st.undelivered + t.fwd_refused);
}

struct rogue {
	int shut_graceful_rc, shut_immediate_rc;
	tr_system *after_destroy;
	tr_test_latch done;
};

static int rogue_beh(void *state, tr_msg *m)
{
	struct rogue *rg = state;
	tr_system *s = tr_self_system();

	(void)m;
	rg->shut_graceful_rc = tr_system_shutdown(s, TR_SHUTDOWN_GRACEFUL);
	rg->shut_immediate_rc = tr_system_shutdown(s, TR_SHUTDOWN_IMMEDIATE);
	tr_system_destroy(&s); /* must do nothing on a worker */
	rg->after_destroy = s;
	tr_test_latch_count_down(&rg->done);
	return 0;
}

Test(system, shutdown_from_a_worker_is_eworker)
{
	tr_system *sys = sys_start(2);
	struct rogue rg = { 0 };
	struct life l;
	tr_ref r;

	tr_test_latch_init(&rg.done, 1);
	cr_assert_eq(tr_spawn(sys, rogue_beh, &rg, &r), TR_OK);
	send_ok(r, T_GO);
	cr_assert(tr_test_latch_wait(&rg.done, WAIT_S));
	cr_assert_eq(rg.shut_graceful_rc, TR_EWORKER, "%s", tr_err_name(rg.shut_graceful_rc));
	cr_assert_eq(rg.shut_immediate_rc, TR_EWORKER, "%s", tr_err_name(rg.shut_immediate_rc));
	cr_assert_eq(rg.after_destroy, sys, "destroy on a worker touched its argument");

	/* The system still runs. */
	life_init(&l, 1);
	send_ok(spawn_life(sys, &l), T_DATA);
	cr_assert(tr_test_latch_wait(&l.got, WAIT_S));
	sys_finish(&sys);
}

/* Only a system's own workers are barred: an actor may shut down or destroy
 * another system (it blocks its worker meanwhile, which is its business). */
struct remote {
	tr_system *target;
	bool destroy;
	int rc;
	tr_system *after;
	tr_test_latch done;
};

static int remote_beh(void *state, tr_msg *m)
{
	struct remote *rm = state;
	tr_system *t = rm->target;

	(void)m;
	if (rm->destroy)
		tr_system_destroy(&t);
	else
		rm->rc = tr_system_shutdown(t, TR_SHUTDOWN_GRACEFUL);
	rm->after = t;
	tr_test_latch_count_down(&rm->done);
	return 0;
}

static void run_remote(struct remote *rm, tr_system *a, struct life *lb)
{
	tr_ref r;

	tr_test_latch_init(&rm->done, 1);
	life_init(lb, 0);
	spawn_life(rm->target, lb);
	cr_assert_eq(tr_spawn(a, remote_beh, rm, &r), TR_OK);
	send_ok(r, T_GO);
	cr_assert(tr_test_latch_wait(&rm->done, WAIT_S));
}

Test(system, shutdown_other_system_from_a_worker)
{
	tr_system *a = sys_start(1), *b = sys_start(1);
	struct remote rm = { .target = b, .rc = 1 };
	struct life lb;

	run_remote(&rm, a, &lb);
	sys_finish(&a);
	tr_system_destroy(&b);
	cr_assert_eq(rm.rc, TR_OK, "%s", tr_err_name(rm.rc));
	cr_assert_eq(atomic_load(&lb.cleanups), 1);
}

Test(system, destroy_other_system_from_a_worker)
{
	tr_system *a = sys_start(1), *b = sys_start(1);
	struct remote rm = { .target = b, .destroy = true };
	struct life lb;
	bool destroyed;

	run_remote(&rm, a, &lb);
	sys_finish(&a);
	destroyed = rm.after == NULL;
	if (!destroyed)
		tr_system_destroy(&b); /* it did nothing: do not leak it */
	cr_assert(destroyed, "destroy from another system's worker did nothing");
	cr_assert_eq(atomic_load(&lb.cleanups), 1);
	cr_assert_eq(lb.reason, TR_ESHUTDOWN);
}

Test(system, shutdown_twice_is_fine)
{
	tr_system *sys = sys_start(1);
	struct life l;

	life_init(&l, 0);
	spawn_life(sys, &l);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_IMMEDIATE), TR_OK);
	tr_system_destroy(&sys);
	cr_assert_eq(atomic_load(&l.cleanups), 1);
}

struct shutter {
	tr_system *sys;
	tr_shutdown_mode mode;
	int rc;
};

static void *shutter_main(void *arg)
{
	struct shutter *s = arg;

	s->rc = tr_system_shutdown(s->sys, s->mode);
	return NULL;
}

/* Concurrent calls: one does the work, the other waits; both succeed and
 * the actors are cleaned up once. */
Test(system, concurrent_shutdowns)
{
	enum { N = 8 };
	tr_system *sys = sys_start(2);
	struct life l[N];
	struct shutter s[2] = {
		{ sys, TR_SHUTDOWN_GRACEFUL, 1 },
		{ sys, TR_SHUTDOWN_IMMEDIATE, 1 },
	};
	pthread_t th[2];

	for (int i = 0; i < N; i++) {
		life_init(&l[i], 0);
		spawn_life(sys, &l[i]);
	}
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, shutter_main, &s[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(s[0].rc, TR_OK);
	cr_assert_eq(s[1].rc, TR_OK);
	/* Both returned, so the shutdown is complete. */
	for (int i = 0; i < N; i++)
		cr_assert_eq(atomic_load(&l[i].cleanups), 1, "actor %d", i);
	tr_system_destroy(&sys);
}

Test(system, shutdown_bad_arguments)
{
	tr_system *sys = sys_start(1);
	struct life l;
	tr_ref r;

	cr_assert_eq(tr_system_shutdown(NULL, TR_SHUTDOWN_GRACEFUL), TR_EINVAL);
	cr_assert_eq(tr_system_shutdown(sys, (tr_shutdown_mode)7), TR_EINVAL);
	cr_assert_eq(tr_system_shutdown(sys, (tr_shutdown_mode)-1), TR_EINVAL);
	/* The refused calls did not stop anything. */
	life_init(&l, 1);
	r = spawn_life(sys, &l);
	send_ok(r, T_DATA);
	cr_assert(tr_test_latch_wait(&l.got, WAIT_S));
	sys_finish(&sys);
}

/* A never-started system has no workers: cleanups run on the caller. */
Test(system, shutdown_never_started_runs_cleanups)
{
	enum { N = 3 };
	tr_system *sys = sys_new(2);
	struct life l[N];
	tr_ref r[N];
	tr_stats st;

	for (int i = 0; i < N; i++) {
		life_init(&l[i], 0);
		r[i] = spawn_life(sys, &l[i]);
	}
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(atomic_load(&l[i].cleanups), 1, "actor %d", i);
		cr_assert_eq(l[i].reason, TR_ESHUTDOWN);
		cr_assert(pthread_equal(l[i].cleanup_thread, pthread_self()));
		cr_assert_eq(tr_send(r[i], T_DATA, NULL, 0), TR_ESHUTDOWN);
	}
	st = stats_of(sys);
	cr_assert_eq(st.spawned, N);
	cr_assert_eq(st.stopped, N);
	cr_assert_eq(st.alive, 0);
	tr_system_destroy(&sys);
	for (int i = 0; i < N; i++)
		cr_assert_eq(atomic_load(&l[i].cleanups), 1, "destroy ran cleanup again");
}

/* ---- destroy ---- */

Test(system, destroy_null_is_noop)
{
	tr_system *sys = NULL;

	tr_system_destroy(NULL);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
}

/* Destroy of a running system shuts it down gracefully first. */
Test(system, destroy_running_system_drains_it)
{
	enum { N = 2000 };
	tr_system *sys = sys_start(2);
	struct life l;
	tr_ref r;

	life_init(&l, N);
	r = spawn_life(sys, &l);
	for (int i = 0; i < N; i++)
		send_ok(r, T_DATA);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
	cr_assert_eq(atomic_load(&l.msgs), N, "destroy dropped accepted messages");
	cr_assert_eq(atomic_load(&l.cleanups), 1);
	cr_assert_eq(l.reason, TR_ESHUTDOWN);
	cr_assert_eq(tr_send(r, T_DATA, NULL, 0), TR_EDEAD);
}

/* Cleanup runs exactly once per actor, also for a system destroyed without
 * ever being started (the hook may own the state). */
Test(system, destroy_never_started_runs_cleanups)
{
	tr_system *sys = sys_new(1);
	struct life l;

	life_init(&l, 0);
	spawn_life(sys, &l);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
	cr_assert_eq(atomic_load(&l.cleanups), 1);
	cr_assert_eq(l.reason, TR_ESHUTDOWN);
}

/* ---- counters ---- */

Test(system, stats_add_up)
{
	enum { N = 10, STOP = 4, MSGS = 100 };
	tr_system *sys = sys_start(2);
	struct life l[N];
	tr_ref r[N];
	tr_stats st;

	st = stats_of(sys);
	cr_assert_eq(st.spawned, 0);
	cr_assert_eq(st.sent, 0);
	for (int i = 0; i < N; i++) {
		life_init(&l[i], i < STOP ? 0 : MSGS);
		r[i] = spawn_life(sys, &l[i]);
	}
	for (int i = 0; i < STOP; i++)
		cr_assert_eq(tr_stop(r[i]), TR_OK);
	for (int i = 0; i < STOP; i++)
		cr_assert(tr_test_latch_wait(&l[i].cleaned, WAIT_S));
	WAIT_STATS(sys, st, st.stopped == STOP && st.alive == N - STOP);
	cr_assert_eq(st.spawned, N);

	for (int n = 0; n < MSGS; n++)
		for (int i = STOP; i < N; i++)
			send_ok(r[i], T_DATA);
	for (int i = STOP; i < N; i++)
		cr_assert(tr_test_latch_wait(&l[i].got, WAIT_S));
	WAIT_STATS(sys, st, st.delivered == (uint64_t)(N - STOP) * MSGS &&
			    st.sent == (uint64_t)(N - STOP) * MSGS);

	st = sys_finish(&sys);
	cr_assert_eq(st.spawned, N);
	cr_assert_eq(st.stopped, N);
	cr_assert_eq(st.alive, 0);
	cr_assert_eq(st.sent, (uint64_t)(N - STOP) * MSGS);
	cr_assert_eq(st.delivered, st.sent);
	cr_assert_eq(st.undelivered, 0);
	cr_assert_eq(st.dead_letters, 0);
	cr_assert_eq(st.rejected_full, 0);
}

Test(system, worker_stats)
{
	enum { W = 2, N = 1000 };
	tr_system *sys = sys_start(W);
	tr_worker_stats ws;
	uint64_t runs = 0;
	struct life l;
	tr_ref r;

	cr_assert_eq(tr_system_worker_stats(sys, W, &ws), TR_EINVAL);
	cr_assert_eq(tr_system_worker_stats(sys, UINT32_MAX, &ws), TR_EINVAL);
	cr_assert_eq(tr_system_worker_stats(NULL, 0, &ws), TR_EINVAL);
	cr_assert_eq(tr_system_worker_stats(sys, 0, NULL), TR_EINVAL);

	life_init(&l, N);
	r = spawn_life(sys, &l);
	for (int i = 0; i < N; i++)
		send_ok(r, T_DATA);
	cr_assert(tr_test_latch_wait(&l.got, WAIT_S));
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	for (unsigned i = 0; i < W; i++) {
		cr_assert_eq(tr_system_worker_stats(sys, i, &ws), TR_OK);
		runs += ws.runs;
	}
	cr_assert_gt(runs, 0);
	/* One run handles at most `batch` messages. */
	cr_assert_geq(runs * TR_BATCH_DEFAULT, N);
	cr_assert_eq(tr_system_worker_stats(sys, W, &ws), TR_EINVAL);
	tr_system_destroy(&sys);
}

/* A run ends after its time slice even when `batch` and the mailbox
 * snapshot would let it go on: 200 queued messages of 500 us each take
 * several runs (about 32 messages each), not one. */
struct gate {
	tr_test_latch entered, open;
};

static int gate_beh(void *state, tr_msg *m)
{
	struct gate *g = state;

	(void)m;
	tr_test_latch_count_down(&g->entered);
	return tr_test_latch_wait(&g->open, WAIT_S) ? 0 : TR_ETIMEDOUT;
}

struct slow {
	uint64_t handled, total;
	tr_test_latch done;
};

static int slow_beh(void *state, tr_msg *m)
{
	struct slow *s = state;
	struct timespec ts = { 0, 500000 };

	(void)m;
	nanosleep(&ts, NULL);
	if (++s->handled == s->total)
		tr_test_latch_count_down(&s->done);
	return 0;
}

Test(system, a_long_run_ends_after_its_time_slice)
{
	enum { N = 200 };
	tr_system *sys = sys_start(1);
	struct gate g;
	struct slow s = { .total = N };
	tr_worker_stats ws;
	tr_ref gate, slow;

	tr_test_latch_init(&g.entered, 1);
	tr_test_latch_init(&g.open, 1);
	tr_test_latch_init(&s.done, 1);
	cr_assert_eq(tr_spawn(sys, gate_beh, &g, &gate), TR_OK);
	cr_assert_eq(tr_spawn(sys, slow_beh, &s, &slow), TR_OK);
	send_ok(gate, T_GO);
	cr_assert(tr_test_latch_wait(&g.entered, WAIT_S)); /* the only worker is held */
	for (int i = 0; i < N; i++)
		send_ok(slow, T_DATA);
	tr_test_latch_count_down(&g.open);
	cr_assert(tr_test_latch_wait(&s.done, WAIT_S));
	cr_assert_eq(tr_system_worker_stats(sys, 0, &ws), TR_OK);
	/* gate: one run; slow: N / 32 = 6 or more with the slice, 1 without */
	cr_assert_geq(ws.runs, 1 + 5, "%lu runs", (unsigned long)ws.runs);
	sys_finish(&sys);
	tr_test_latch_destroy(&g.entered);
	tr_test_latch_destroy(&g.open);
	tr_test_latch_destroy(&s.done);
}

Test(system, null_arguments_are_einval)
{
	tr_system *sys = sys_new(1);
	tr_stats st;

	cr_assert_eq(tr_config_init(NULL), TR_EINVAL);
	cr_assert_eq(tr_system_new(NULL, NULL), TR_EINVAL);
	cr_assert_eq(tr_system_start(NULL), TR_EINVAL);
	cr_assert_eq(tr_system_shutdown(NULL, TR_SHUTDOWN_IMMEDIATE), TR_EINVAL);
	cr_assert_eq(tr_system_stats(NULL, &st), TR_EINVAL);
	cr_assert_eq(tr_system_stats(sys, NULL), TR_EINVAL);
	cr_assert_eq(tr_system_workers(NULL), 0);
	cr_assert_eq(tr_spawn(NULL, life_beh, NULL, &(tr_ref){ 0 }), TR_EINVAL);
	tr_system_destroy(&sys);
}
