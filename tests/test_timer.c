/*
 * Unit tests for troupe/timer.h: one-shot and periodic timers, their
 * payload and sender, cancellation (before the fire, after the delivery, of
 * a tick already queued, racing the fire), timers of a stopped target, the
 * error paths and the timers_fired counter.
 *
 * Timing: a timer must never fire before its deadline, so every delivery
 * time is checked against the time taken just before arming. Nothing checks
 * how late a timer is; sleeps only give a wrong delivery the time to happen.
 * To hold a timer message in a mailbox, a test parks the target itself (in
 * a one-worker system) on a latch and waits until the timer service counted
 * the fire.
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

TestSuite(timer, .timeout = 120);

enum {
	T_TICK = 0x300,
	T_OTHER,
	T_FLUSH,
	T_BLOCK,
	T_GO,
	T_SLOW,
	T_MARK,
	T_DATA,
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

static tr_system *sys_new(unsigned workers)
{
	tr_config cfg;
	tr_system *sys = NULL;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = workers;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	cr_assert_not_null(sys);
	return sys;
}

static tr_system *sys_start(unsigned workers)
{
	tr_system *sys = sys_new(workers);

	cr_assert_eq(tr_system_start(sys), TR_OK);
	return sys;
}

/* Graceful shutdown, final counters, destroy. */
static tr_stats sys_finish(tr_system **sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_shutdown(*sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(*sys, &st), TR_OK);
	tr_system_destroy(sys);
	cr_assert_null(*sys);
	return st;
}

static tr_stats stats_of(const tr_system *sys)
{
	tr_stats st;

	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	return st;
}

static uint64_t fired(const tr_system *sys)
{
	tr_stats st;

	if (tr_system_stats(sys, &st) != TR_OK)
		return 0;
	return st.timers_fired;
}

/* Waits (from any thread) until timers_fired reaches `n`; false on a hang. */
static bool wait_fired(const tr_system *sys, uint64_t n)
{
	uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;

	while (fired(sys) < n) {
		if (now_ns() > end)
			return false;
		sched_yield();
	}
	return true;
}

static void send_ok(tr_ref to, uint32_t type, const void *data, size_t size)
{
	int rc = tr_send(to, type, data, size);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

/* ---- recorder: keeps every timer message it handles ---- */

#define MAXREC 256 /* >= 2 * MASS_SHORT */

struct hit {
	uint64_t at;     /* CLOCK_MONOTONIC at delivery */
	uint64_t corr;
	uint64_t val;    /* first payload word, if any */
	tr_ref sender;
	uint32_t type;
	uint16_t flags;
	size_t size;
};

/* Parks the actor that handles it until released. */
struct blk {
	tr_test_latch entered;
	tr_test_latch release;
};

struct rec {
	atomic_uint n;        /* T_TICK / T_OTHER messages handled */
	atomic_uint handled;  /* every message handled */
	struct hit h[MAXREC];
	unsigned char last[TR_MSG_INLINE_MAX]; /* payload of the last timer message */
	tr_test_latch got;    /* one count per timer message */
	tr_test_latch cleaned;
	int reason;
};

static struct rec *rec_new(uint64_t expect)
{
	struct rec *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	tr_test_latch_init(&r->got, expect);
	tr_test_latch_init(&r->cleaned, 1);
	r->reason = 12345;
	return r;
}

static void rec_free(struct rec *r)
{
	tr_test_latch_destroy(&r->got);
	tr_test_latch_destroy(&r->cleaned);
	free(r);
}

static void record(struct rec *r, tr_msg *m)
{
	unsigned i = atomic_load(&r->n);

	if (i < MAXREC) {
		struct hit *h = &r->h[i];

		h->at = now_ns();
		h->corr = m->corr;
		h->sender = tr_msg_sender(m);
		h->type = tr_msg_type(m);
		h->flags = m->flags;
		h->size = tr_msg_size(m);
		h->val = 0;
		if (tr_msg_data(m) && h->size >= sizeof(h->val))
			memcpy(&h->val, tr_msg_data(m), sizeof(h->val));
		if (tr_msg_data(m) && h->size <= sizeof(r->last))
			memcpy(r->last, tr_msg_data(m), h->size);
	}
	atomic_store(&r->n, i + 1);
	tr_test_latch_count_down(&r->got);
}

static int rec_beh(void *state, tr_msg *m)
{
	struct rec *r = state;
	void *p = NULL;

	atomic_fetch_add(&r->handled, 1);
	switch (tr_msg_type(m)) {
	case T_TICK:
	case T_OTHER:
		record(r, m);
		break;
	case T_FLUSH:
		memcpy(&p, tr_msg_data(m), sizeof(p));
		tr_test_latch_count_down(p);
		break;
	case T_BLOCK: {
		struct blk *b;

		memcpy(&b, tr_msg_data(m), sizeof(b));
		tr_test_latch_count_down(&b->entered);
		tr_test_latch_wait(&b->release, WAIT_S);
		break;
	}
	}
	return 0;
}

static void rec_cleanup(void *state, int reason)
{
	struct rec *r = state;

	r->reason = reason;
	tr_test_latch_count_down(&r->cleaned);
}

static tr_ref spawn_rec(tr_system *sys, struct rec *r)
{
	tr_actor_opts o = { .behaviour = rec_beh, .state = r, .cleanup = rec_cleanup };
	tr_ref ref = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &ref), TR_OK);
	return ref;
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

/* Parks actor `to` (a recorder) on its worker. */
static void block(tr_ref to, struct blk *b)
{
	tr_test_latch_init(&b->entered, 1);
	tr_test_latch_init(&b->release, 1);
	send_ok(to, T_BLOCK, &b, sizeof(b));
	cr_assert(tr_test_latch_wait(&b->entered, WAIT_S), "blocked actor never ran");
}

static void unblock(struct blk *b)
{
	tr_test_latch_count_down(&b->release);
}

static void blk_destroy(struct blk *b)
{
	tr_test_latch_destroy(&b->entered);
	tr_test_latch_destroy(&b->release);
}

static void check_not_early(uint64_t at, uint64_t armed, uint64_t delay, const char *what)
{
	cr_assert_geq(at, armed + delay, "%s: delivered %.3f ms before its deadline", what,
		      (double)(armed + delay - at) / 1e6);
}

/* ---------------------------------------------------------- one-shot */

Test(timer, send_after_fires_once_not_before_deadline)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(1);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t = TR_TIMER_NONE;
	uint64_t v = 42, t0;
	tr_stats st;

	t0 = now_ns();
	cr_assert_eq(tr_send_after(to, 20 * MS, T_TICK, &v, sizeof(v), &t), TR_OK);
	cr_assert_neq(t.id, 0, "a valid timer is not TR_TIMER_NONE");
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S), "timer never fired");
	sleep_ms(60); /* room for a wrong second delivery */
	flush(to);

	cr_assert_eq(atomic_load(&r->n), 1, "one-shot delivered %u times", atomic_load(&r->n));
	check_not_early(r->h[0].at, t0, 20 * MS, "one-shot");
	cr_assert_eq(r->h[0].type, T_TICK);
	cr_assert_eq(r->h[0].size, sizeof(v));
	cr_assert_eq(r->h[0].val, 42);
	cr_assert(r->h[0].flags & TR_MSG_F_TIMER, "timer message without TR_MSG_F_TIMER");
	cr_assert_eq(r->h[0].corr, t.id, "a timer message's corr is its timer id");
	cr_assert(tr_ref_is_none(r->h[0].sender), "armed from main: sender must be TR_REF_NONE");
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD, "cancel after delivery");

	st = sys_finish(&sys);
	cr_assert_eq(st.timers_fired, 1);
	rec_free(r);
}

/* Many one-shots at once, deadlines spread and armed out of order: each
 * arrives once, none early, and the counter adds up. */
Test(timer, many_one_shots_each_once_none_early)
{
	enum { N = 64 };
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(N);
	tr_ref to = spawn_rec(sys, r);
	uint64_t armed[N], delay[N];
	unsigned seen[N] = { 0 };
	tr_stats st;

	for (uint64_t i = 0; i < N; i++) {
		delay[i] = ((i * 37) % N) * MS / 2; /* 0 .. 31.5 ms, shuffled */
		armed[i] = now_ns();
		cr_assert_eq(tr_send_after(to, delay[i], T_TICK, &i, sizeof(i), NULL), TR_OK);
	}
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S), "only %u of %d timers fired",
		  atomic_load(&r->n), N);
	sleep_ms(50);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), N);
	for (unsigned k = 0; k < N; k++) {
		uint64_t i = r->h[k].val;

		cr_assert_lt(i, N);
		seen[i]++;
		check_not_early(r->h[k].at, armed[i], delay[i], "one-shot of many");
	}
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(seen[i], 1, "timer %u delivered %u times", i, seen[i]);
	st = sys_finish(&sys);
	cr_assert_eq(st.timers_fired, N);
	rec_free(r);
}

Test(timer, zero_delay_and_null_out)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(2);
	tr_ref to = spawn_rec(sys, r);

	cr_assert_eq(tr_send_after(to, 0, T_TICK, NULL, 0, NULL), TR_OK);
	cr_assert_eq(tr_send_after(to, MS, T_OTHER, NULL, 0, NULL), TR_OK);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 2);
	cr_assert_eq(r->h[0].size + r->h[1].size, 0);
	sys_finish(&sys);
	rec_free(r);
}

/* The payload is copied when the timer is armed, up to the inline maximum. */
Test(timer, payload_copied_at_arm_time)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(1);
	tr_ref to = spawn_rec(sys, r);
	unsigned char want[TR_MSG_INLINE_MAX];
	unsigned char *buf = malloc(TR_MSG_INLINE_MAX);

	cr_assert_not_null(buf);
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (unsigned char)(i * 7 + 3);
	memcpy(buf, want, sizeof(want));
	cr_assert_eq(tr_send_after(to, 5 * MS, T_TICK, buf, TR_MSG_INLINE_MAX, NULL), TR_OK);
	memset(buf, 0xAA, TR_MSG_INLINE_MAX);
	free(buf);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	flush(to);
	cr_assert_eq(r->h[0].size, TR_MSG_INLINE_MAX);
	cr_assert_arr_eq(r->last, want, sizeof(want), "timer payload corrupted");
	sys_finish(&sys);
	rec_free(r);
}

/* ---- sender: the arming actor ---- */

struct armer {
	tr_ref to;
	int rc_other, rc_self, rc_every;
	tr_timer every;
	tr_test_latch armed;
};

static int armer_beh(void *state, tr_msg *m)
{
	struct armer *a = state;
	uint64_t v = 7;

	if (tr_msg_type(m) == T_GO) {
		a->rc_other = tr_send_after(a->to, MS, T_TICK, &v, sizeof(v), NULL);
		a->rc_self = tr_send_after(tr_self(), MS, T_TICK, &v, sizeof(v), NULL);
		a->rc_every = tr_send_every(a->to, 2 * MS, T_OTHER, &v, sizeof(v), &a->every);
		tr_test_latch_count_down(&a->armed);
	} else if (tr_msg_type(m) == T_TICK) {
		/* its own timer: the sender must be itself */
		a->rc_self = tr_ref_eq(tr_msg_sender(m), tr_self()) ? 1 : -1;
		tr_test_latch_count_down(&a->armed);
	}
	return 0;
}

Test(timer, sender_is_the_arming_actor)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(3); /* the one-shot and two ticks */
	struct armer a = { .rc_other = 1 };
	tr_ref to = spawn_rec(sys, r), ar;

	a.to = to;
	tr_test_latch_init(&a.armed, 2);
	cr_assert_eq(tr_spawn(sys, armer_beh, &a, &ar), TR_OK);
	send_ok(ar, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&a.armed, WAIT_S));
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	cr_assert_eq(a.rc_other, TR_OK);
	cr_assert_eq(a.rc_every, TR_OK);
	cr_assert_eq(a.rc_self, 1, "a timer armed by an actor to itself: wrong sender");
	cr_assert_eq(tr_timer_cancel(a.every), TR_OK);
	flush(to);
	for (unsigned i = 0; i < 3; i++) {
		cr_assert(tr_ref_eq(r->h[i].sender, ar), "timer message %u: sender is not the armer", i);
		cr_assert(r->h[i].flags & TR_MSG_F_TIMER);
		if (r->h[i].type == T_OTHER)
			cr_assert_eq(r->h[i].corr, a.every.id);
	}
	sys_finish(&sys);
	rec_free(r);
}

/* ---------------------------------------------------------- periodic */

#define TICKS 5

struct ticker {
	uint64_t period;
	uint64_t armed;
	tr_timer t;
	int arm_rc, cancel_rc, cancel2_rc;
	unsigned ticks;
	unsigned stop_at;           /* cancel from inside after this many ticks */
	uint64_t at[64];
	uint64_t val_bad, corr_bad;
	tr_test_latch done;
	/* skip test */
	unsigned slow_after;        /* tick after which it sends itself T_SLOW */
	bool in_gap;                /* between the end of T_SLOW and T_MARK */
	unsigned gap_ticks;         /* ticks handled in that gap */
	bool marked;
	uint64_t fired_before_slow, fired_in_slow;
};

static int ticker_beh(void *state, tr_msg *m)
{
	struct ticker *k = state;
	uint64_t v = 0xABCDEF;

	switch (tr_msg_type(m)) {
	case T_GO:
		k->armed = now_ns();
		k->arm_rc = tr_send_every(tr_self(), k->period, T_TICK, &v, sizeof(v), &k->t);
		if (k->arm_rc != TR_OK)
			tr_test_latch_count_down(&k->done);
		break;
	case T_TICK:
		if (k->ticks < 64)
			k->at[k->ticks] = now_ns();
		k->ticks++;
		if (tr_msg_size(m) != sizeof(v) || memcmp(tr_msg_data(m), &v, sizeof(v)) != 0)
			k->val_bad++;
		if (m->corr != k->t.id)
			k->corr_bad++;
		if (k->in_gap)
			k->gap_ticks++;
		if (k->slow_after && k->ticks == k->slow_after)
			tr_send(tr_self(), T_SLOW, NULL, 0);
		if (k->ticks == k->stop_at) {
			k->cancel_rc = tr_timer_cancel(k->t);
			k->cancel2_rc = tr_timer_cancel(k->t);
			tr_test_latch_count_down(&k->done);
		}
		break;
	case T_SLOW: {
		/* Stay busy until the timer fired at least once meanwhile, then
		 * for many more periods: a bursting timer would queue a tick per
		 * period. T_MARK goes behind whatever is queued now. */
		tr_system *sys = tr_self_system();
		uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;

		k->fired_before_slow = fired(sys);
		while (fired(sys) == k->fired_before_slow && now_ns() < end)
			sched_yield();
		sleep_ms((long)(20 * k->period / MS));
		k->fired_in_slow = fired(sys) - k->fired_before_slow;
		k->in_gap = true;
		tr_send(tr_self(), T_MARK, NULL, 0);
		break;
	}
	case T_MARK:
		k->in_gap = false;
		k->marked = true;
		break;
	case T_FLUSH: {
		void *p;

		memcpy(&p, tr_msg_data(m), sizeof(p));
		tr_test_latch_count_down(p);
		break;
	}
	}
	return 0;
}

/* Ticks come one after another; the k-th never before arm + k periods; a
 * cancel from the tick handler itself stops them for good. */
Test(timer, send_every_ticks_until_cancelled)
{
	tr_system *sys = sys_start(2);
	struct ticker k = { .period = 5 * MS, .stop_at = TICKS };
	tr_ref r;

	tr_test_latch_init(&k.done, 1);
	cr_assert_eq(tr_spawn(sys, ticker_beh, &k, &r), TR_OK);
	send_ok(r, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&k.done, WAIT_S), "only %u ticks", k.ticks);
	cr_assert_eq(k.arm_rc, TR_OK);
	sleep_ms(60); /* a dozen periods: a tick after the cancel would show */
	flush(r);
	cr_assert_eq(k.cancel_rc, TR_OK);
	cr_assert_eq(k.cancel2_rc, TR_EDEAD, "second cancel of a periodic timer");
	cr_assert_eq(k.ticks, TICKS, "%u ticks, cancelled after %d", k.ticks, TICKS);
	cr_assert_eq(k.val_bad, 0, "tick payload wrong");
	cr_assert_eq(k.corr_bad, 0, "tick corr is not the timer id");
	for (unsigned i = 0; i < TICKS; i++)
		check_not_early(k.at[i], k.armed, (i + 1) * k.period, "periodic tick");
	sys_finish(&sys);
}

/* A behaviour that stays busy for 20+ periods must not find a burst of
 * ticks when it returns: at most one tick per timer is queued. */
Test(timer, send_every_skips_ticks_for_a_slow_actor)
{
	tr_system *sys = sys_start(1);
	struct ticker k = { .period = 2 * MS, .slow_after = 2, .stop_at = 8 };
	tr_ref r;

	tr_test_latch_init(&k.done, 1);
	cr_assert_eq(tr_spawn(sys, ticker_beh, &k, &r), TR_OK);
	send_ok(r, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&k.done, WAIT_S), "only %u ticks", k.ticks);
	flush(r);
	cr_assert_eq(k.arm_rc, TR_OK);
	cr_assert_eq(k.cancel_rc, TR_OK);
	cr_assert(k.marked);
	cr_assert_geq(k.fired_in_slow, 1);
	cr_assert_leq(k.gap_ticks, 1, "%u ticks were queued while the actor was busy "
		      "(%llu fired meanwhile): periodic timers must not burst", k.gap_ticks,
		      (unsigned long long)k.fired_in_slow);
	for (unsigned i = 0; i < k.ticks && i < 64; i++)
		check_not_early(k.at[i], k.armed, (i + 1) * k.period, "periodic tick");
	sys_finish(&sys);
}

/* Cancel from another thread: at most the tick being handled at that moment
 * still completes, nothing starts after. */
Test(timer, cancel_periodic_from_main_thread)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(3);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t;
	unsigned at_cancel;

	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 0, &t), TR_OK);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	cr_assert_eq(tr_timer_cancel(t), TR_OK);
	at_cancel = atomic_load(&r->n);
	sleep_ms(30);
	flush(to);
	cr_assert_leq(atomic_load(&r->n), at_cancel + 1, "%u ticks after the cancel",
		      atomic_load(&r->n) - at_cancel);
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD);
	sys_finish(&sys);
	rec_free(r);
}

/* ---------------------------------------------------------- cancel */

Test(timer, cancel_before_fire_never_delivers)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	tr_timer a, b;
	tr_stats st;

	cr_assert_eq(tr_send_after(to, 30 * MS, T_TICK, NULL, 0, &a), TR_OK);
	cr_assert_eq(tr_send_every(to, 30 * MS, T_TICK, NULL, 0, &b), TR_OK);
	cr_assert_eq(tr_timer_cancel(a), TR_OK);
	cr_assert_eq(tr_timer_cancel(b), TR_OK);
	cr_assert_eq(tr_timer_cancel(a), TR_EDEAD, "second cancel");
	cr_assert_eq(tr_timer_cancel(b), TR_EDEAD, "second cancel");
	sleep_ms(100);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 0, "cancelled timer delivered");
	st = sys_finish(&sys);
	cr_assert_eq(st.timers_fired, 0);
	rec_free(r);
}

Test(timer, cancel_none_or_unknown_is_edead)
{
	tr_system *sys = sys_start(1);

	cr_assert_eq(tr_timer_cancel(TR_TIMER_NONE), TR_EDEAD);
	cr_assert_eq(tr_timer_cancel((tr_timer){ 0x123456789abcdefull }), TR_EDEAD);
	sys_finish(&sys);
	cr_assert_eq(tr_timer_cancel(TR_TIMER_NONE), TR_EDEAD);
}

/* Delivered = handed to the behaviour and returned: cancel says TR_EDEAD. */
Test(timer, cancel_after_delivery_is_edead)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(1);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t;

	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, &t), TR_OK);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	flush(to);
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD);
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD);
	sys_finish(&sys);
	rec_free(r);
}

/*
 * The one-shot has fired (the service counted it) but sits in the mailbox
 * behind a message that blocks the target: cancel still wins (TR_OK) and
 * the message is dropped when it comes up, without being counted as
 * delivered.
 */
Test(timer, cancel_one_shot_already_queued)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	struct blk b;
	tr_timer t;
	tr_stats st;

	block(to, &b);
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, &t), TR_OK);
	cr_assert(wait_fired(sys, 1), "timer never fired");
	cr_assert_eq(tr_timer_cancel(t), TR_OK, "fired but not handled: cancel must win");
	unblock(&b);
	flush(to);
	sleep_ms(10);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 0, "cancelled tick was delivered");
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD);
	st = sys_finish(&sys);
	cr_assert_eq(st.delivered, 3, "T_BLOCK and two T_FLUSH; the dropped tick is not "
		     "delivered (got %llu)", (unsigned long long)st.delivered);
	cr_assert_eq(st.sent, st.delivered + st.undelivered,
		     "sent %llu != delivered %llu + undelivered %llu", (unsigned long long)st.sent,
		     (unsigned long long)st.delivered, (unsigned long long)st.undelivered);
	blk_destroy(&b);
	rec_free(r);
}

/* The same for a periodic timer: the tick queued behind the blocking
 * message is dropped and no further tick comes. */
Test(timer, cancel_periodic_drops_queued_tick)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	struct blk b;
	tr_timer t;
	tr_stats st;

	block(to, &b);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 0, &t), TR_OK);
	cr_assert(wait_fired(sys, 1), "timer never fired");
	sleep_ms(10); /* ten periods: still one tick queued at most */
	cr_assert_eq(tr_timer_cancel(t), TR_OK);
	unblock(&b);
	flush(to);
	sleep_ms(20);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 0, "%u ticks after the cancel", atomic_load(&r->n));
	cr_assert_eq(tr_timer_cancel(t), TR_EDEAD);
	st = sys_finish(&sys);
	cr_assert_eq(st.timers_fired, 1, "ticks fired while one was queued: %llu",
		     (unsigned long long)st.timers_fired);
	cr_assert_eq(st.delivered, 3);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
	blk_destroy(&b);
	rec_free(r);
}

/*
 * Cancel racing the fire: many short one-shots, each cancelled by the
 * arming thread at about its deadline (a little before or after). Each must
 * end one of two ways: delivered exactly once and cancel returned TR_EDEAD,
 * or never delivered and cancel returned TR_OK.
 */
#define RACE_THREADS 2
#define RACE_PER_THREAD 1536
#define RACE_BATCH 32
#define RACE_TARGETS 4

static atomic_uint race_hits[RACE_THREADS * RACE_PER_THREAD];

static int race_beh(void *state, tr_msg *m)
{
	uint32_t i;

	(void)state;
	if (tr_msg_type(m) == T_TICK && tr_msg_size(m) == sizeof(i)) {
		memcpy(&i, tr_msg_data(m), sizeof(i));
		if (i < RACE_THREADS * RACE_PER_THREAD)
			atomic_fetch_add(&race_hits[i], 1);
	}
	return 0;
}

struct racer {
	unsigned id;
	tr_ref *targets;
	int rc[RACE_PER_THREAD];
	int arm_err;
	uint64_t rng;
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void *racer_main(void *arg)
{
	struct racer *rc = arg;

	for (unsigned base = 0; base < RACE_PER_THREAD; base += RACE_BATCH) {
		tr_timer t[RACE_BATCH];
		uint64_t when[RACE_BATCH];
		bool done[RACE_BATCH] = { false };

		for (unsigned j = 0; j < RACE_BATCH; j++) {
			uint32_t idx = rc->id * RACE_PER_THREAD + base + j;
			uint64_t delay = rnd(&rc->rng) % (2 * MS);
			int64_t jitter = (int64_t)(rnd(&rc->rng) % (400 * 1000)) - 200 * 1000;
			uint64_t t0 = now_ns();
			int r = tr_send_after(rc->targets[idx % RACE_TARGETS], delay, T_TICK, &idx,
					      sizeof(idx), &t[j]);

			if (r != TR_OK) {
				rc->arm_err = r;
				return NULL;
			}
			when[j] = (uint64_t)((int64_t)(t0 + delay) + jitter);
		}
		/* cancel each at its moment, earliest first */
		for (unsigned left = RACE_BATCH; left; left--) {
			unsigned best = 0;
			bool any = false;

			for (unsigned j = 0; j < RACE_BATCH; j++)
				if (!done[j] && (!any || when[j] < when[best])) {
					best = j;
					any = true;
				}
			while (now_ns() < when[best])
				;
			rc->rc[base + best] = tr_timer_cancel(t[best]);
			done[best] = true;
		}
	}
	return NULL;
}

Test(timer, cancel_racing_fire_is_exactly_one_outcome)
{
	tr_system *sys = sys_start(2);
	tr_ref targets[RACE_TARGETS];
	struct racer *rc = calloc(RACE_THREADS, sizeof(*rc));
	pthread_t th[RACE_THREADS];
	unsigned n_ok = 0, n_dead = 0;

	cr_assert_not_null(rc);
	for (unsigned i = 0; i < RACE_THREADS * RACE_PER_THREAD; i++)
		atomic_store(&race_hits[i], 0);
	for (unsigned i = 0; i < RACE_TARGETS; i++)
		cr_assert_eq(tr_spawn(sys, race_beh, NULL, &targets[i]), TR_OK);
	for (unsigned i = 0; i < RACE_THREADS; i++) {
		rc[i].id = i;
		rc[i].targets = targets;
		rc[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
		cr_assert_eq(pthread_create(&th[i], NULL, racer_main, &rc[i]), 0);
	}
	for (unsigned i = 0; i < RACE_THREADS; i++)
		pthread_join(th[i], NULL);
	sleep_ms(50); /* past every deadline: a wrong late delivery would show */
	sys_finish(&sys);

	for (unsigned i = 0; i < RACE_THREADS; i++) {
		cr_assert_eq(rc[i].arm_err, 0, "arming failed: %s", tr_err_name(rc[i].arm_err));
		for (unsigned j = 0; j < RACE_PER_THREAD; j++) {
			unsigned idx = i * RACE_PER_THREAD + j;
			unsigned hits = atomic_load(&race_hits[idx]);
			int r = rc[i].rc[j];

			if (r == TR_OK) {
				n_ok++;
				cr_assert_eq(hits, 0, "timer %u: cancel returned TR_OK but it was "
					     "delivered %u times", idx, hits);
			} else {
				n_dead++;
				cr_assert_eq(r, TR_EDEAD, "timer %u: cancel returned %s", idx,
					     tr_err_name(r));
				cr_assert_eq(hits, 1, "timer %u: cancel returned TR_EDEAD but it was "
					     "delivered %u times", idx, hits);
			}
		}
	}
	cr_log_info("cancel race: %u cancelled, %u already delivered", n_ok, n_dead);
	free(rc);
}

/* A handle whose one-shot was delivered must not cancel the timer that
 * reuses its slot. */
Test(timer, stale_handle_does_not_cancel_a_reused_timer)
{
	enum { N = 64 };
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(1 + N);
	tr_ref to = spawn_rec(sys, r);
	tr_timer old, fresh[N];

	cr_assert_eq(tr_send_after(to, 0, T_OTHER, NULL, 0, &old), TR_OK);
	cr_assert(wait_fired(sys, 1));
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 1);
	for (int i = 0; i < N; i++)
		cr_assert_eq(tr_send_after(to, 20 * MS, T_TICK, NULL, 0, &fresh[i]), TR_OK);
	cr_assert_eq(tr_timer_cancel(old), TR_EDEAD);
	for (int i = 0; i < N; i++)
		cr_assert_neq(fresh[i].id, old.id, "a new timer got the old id");
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S), "stale cancel killed a new timer: %u of %d",
		  atomic_load(&r->n) - 1, N);
	sys_finish(&sys);
	rec_free(r);
}

/* Two threads cancel the same timers at once: exactly one wins each. */
#define DC_N 2000

struct dcancel {
	tr_timer *t;
	int rc[DC_N];
	tr_test_latch *go;
};

static void *dcancel_main(void *arg)
{
	struct dcancel *d = arg;

	tr_test_latch_wait(d->go, WAIT_S);
	for (int i = 0; i < DC_N; i++)
		d->rc[i] = tr_timer_cancel(d->t[i]);
	return NULL;
}

Test(timer, concurrent_cancels_one_wins)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	tr_timer *t = calloc(DC_N, sizeof(*t));
	struct dcancel *d = calloc(2, sizeof(*d));
	tr_test_latch go;
	pthread_t th[2];

	cr_assert(t && d);
	tr_test_latch_init(&go, 1);
	for (int i = 0; i < DC_N; i++) {
		if (i % 2)
			cr_assert_eq(tr_send_after(to, 10000 * MS, T_TICK, NULL, 0, &t[i]), TR_OK);
		else
			cr_assert_eq(tr_send_every(to, 10000 * MS, T_TICK, NULL, 0, &t[i]), TR_OK);
	}
	for (int k = 0; k < 2; k++) {
		d[k].t = t;
		d[k].go = &go;
		cr_assert_eq(pthread_create(&th[k], NULL, dcancel_main, &d[k]), 0);
	}
	tr_test_latch_count_down(&go);
	for (int k = 0; k < 2; k++)
		pthread_join(th[k], NULL);
	for (int i = 0; i < DC_N; i++) {
		int a = d[0].rc[i], b = d[1].rc[i];

		cr_assert((a == TR_OK && b == TR_EDEAD) || (a == TR_EDEAD && b == TR_OK),
			  "timer %d: cancels returned %s and %s", i, tr_err_name(a), tr_err_name(b));
	}
	sys_finish(&sys);
	cr_assert_eq(atomic_load(&r->n), 0);
	tr_test_latch_destroy(&go);
	free(t);
	free(d);
	rec_free(r);
}

/*
 * Mass cancellation (the service may compact its heap then): the timers
 * left armed among thousands of cancelled ones still fire once each, none
 * early, and timers armed afterwards too.
 */
#define MASS_LONG 3000
#define MASS_SHORT 100

Test(timer, mass_cancel_keeps_the_live_timers)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(2 * MASS_SHORT);
	tr_ref to = spawn_rec(sys, r);
	tr_timer *lt = calloc(MASS_LONG, sizeof(*lt));
	uint64_t armed[2 * MASS_SHORT], delay[2 * MASS_SHORT];
	unsigned seen[2 * MASS_SHORT] = { 0 };
	uint64_t k = 0;

	cr_assert_not_null(lt);
	for (uint64_t i = 0; i < MASS_LONG; i++) {
		cr_assert_eq(tr_send_every(to, (10000 + i) * MS, T_OTHER, NULL, 0, &lt[i]), TR_OK);
		if (i % (MASS_LONG / MASS_SHORT) == 0 && k < MASS_SHORT) {
			delay[k] = (5 + (k * 7) % 40) * MS;
			armed[k] = now_ns();
			cr_assert_eq(tr_send_after(to, delay[k], T_TICK, &k, sizeof(k), NULL), TR_OK);
			k++;
		}
	}
	cr_assert_eq(k, MASS_SHORT);
	for (int i = 0; i < MASS_LONG; i++)
		cr_assert_eq(tr_timer_cancel(lt[i]), TR_OK, "long timer %d", i);
	for (; k < 2 * MASS_SHORT; k++) {
		delay[k] = ((k * 13) % 30) * MS;
		armed[k] = now_ns();
		cr_assert_eq(tr_send_after(to, delay[k], T_TICK, &k, sizeof(k), NULL), TR_OK);
	}
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S), "only %u of %d live timers fired",
		  atomic_load(&r->n), 2 * MASS_SHORT);
	sleep_ms(50);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 2 * MASS_SHORT);
	for (unsigned j = 0; j < 2 * MASS_SHORT; j++) {
		uint64_t i = r->h[j].val;

		cr_assert_eq(r->h[j].type, T_TICK, "a cancelled timer fired");
		cr_assert_lt(i, 2 * MASS_SHORT);
		seen[i]++;
		check_not_early(r->h[j].at, armed[i], delay[i], "timer among cancelled ones");
	}
	for (unsigned i = 0; i < 2 * MASS_SHORT; i++)
		cr_assert_eq(seen[i], 1, "timer %u fired %u times", i, seen[i]);
	sys_finish(&sys);
	free(lt);
	rec_free(r);
}

/* Deadlines far in the future must not wrap around into the past. */
static void huge_delay_case(bool periodic)
{
	static const uint64_t delays[2] = { UINT64_MAX, UINT64_MAX - 1000 * MS };
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t[2];

	for (int i = 0; i < 2; i++) {
		if (periodic)
			cr_assert_eq(tr_send_every(to, delays[i], T_TICK, NULL, 0, &t[i]), TR_OK);
		else
			cr_assert_eq(tr_send_after(to, delays[i], T_TICK, NULL, 0, &t[i]), TR_OK);
	}
	sleep_ms(50);
	cr_assert_eq(fired(sys), 0, "%llu fires of timers with a %s of ~584 years "
		     "(deadline now + delay overflows?)", (unsigned long long)fired(sys),
		     periodic ? "period" : "delay");
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(tr_timer_cancel(t[i]), TR_OK);
	sys_finish(&sys);
	rec_free(r);
}

Test(timer, huge_delay_does_not_fire)
{
	huge_delay_case(false);
}

Test(timer, huge_period_does_not_fire)
{
	huge_delay_case(true);
}

/* ---------------------------------------------------------- stopped target */

struct selfstop {
	tr_timer every, once;
	int rc_every, rc_once, stop_rc;
	unsigned ticks;
	uint64_t fired_seen;
	int reason;
	tr_test_latch cleaned;
};

static int selfstop_beh(void *state, tr_msg *m)
{
	struct selfstop *s = state;

	if (tr_msg_type(m) == T_GO) {
		tr_system *sys = tr_self_system();
		uint64_t end = now_ns() + (uint64_t)WAIT_S * 1000 * MS;

		s->rc_every = tr_send_every(tr_self(), MS, T_TICK, NULL, 0, &s->every);
		s->rc_once = tr_send_after(tr_self(), MS, T_TICK, NULL, 0, &s->once);
		/* both fire into our own mailbox while we are busy here */
		while (fired(sys) < 2 && now_ns() < end)
			sched_yield();
		s->fired_seen = fired(sys);
		s->stop_rc = tr_stop_self(TR_OK);
	} else if (tr_msg_type(m) == T_TICK) {
		s->ticks++;
	}
	return 0;
}

static void selfstop_cleanup(void *state, int reason)
{
	struct selfstop *s = state;

	s->reason = reason;
	tr_test_latch_count_down(&s->cleaned);
}

/* Ticks queued when their target stops are dropped silently: not
 * delivered, not dead letters. */
Test(timer, target_stop_drops_queued_ticks_without_dead_letters)
{
	tr_system *sys = sys_start(1);
	struct selfstop s = { .reason = 12345 };
	tr_actor_opts o = { .behaviour = selfstop_beh, .state = &s, .cleanup = selfstop_cleanup };
	tr_ref r;
	tr_stats st;

	tr_test_latch_init(&s.cleaned, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	send_ok(r, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&s.cleaned, WAIT_S));
	cr_assert_eq(s.rc_every, TR_OK);
	cr_assert_eq(s.rc_once, TR_OK);
	cr_assert_geq(s.fired_seen, 2);
	cr_assert_eq(s.reason, TR_OK);
	cr_assert_eq(s.ticks, 0);
	sleep_ms(20); /* twenty periods of the periodic timer */
	st = stats_of(sys);
	cr_assert_eq(st.dead_letters, 0, "dropped ticks counted as %llu dead letters",
		     (unsigned long long)st.dead_letters);
	cr_assert_eq(st.undelivered, 0);
	cr_assert_eq(st.timers_fired, s.fired_seen, "timers fired for a stopped target");
	cr_assert_eq(tr_timer_cancel(s.every), TR_EDEAD, "timer of a stopped target");
	cr_assert_eq(tr_timer_cancel(s.once), TR_EDEAD, "timer of a stopped target");
	st = sys_finish(&sys);
	cr_assert_eq(st.dead_letters, 0);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
}

/* Timers still waiting when their target stops never fire. */
Test(timer, target_stop_cancels_pending_timers)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t[4];
	tr_stats st;

	cr_assert_eq(tr_send_after(to, 80 * MS, T_TICK, NULL, 0, &t[0]), TR_OK);
	cr_assert_eq(tr_send_after(to, 100 * MS, T_TICK, "x", 1, &t[1]), TR_OK);
	cr_assert_eq(tr_send_every(to, 40 * MS, T_TICK, NULL, 0, &t[2]), TR_OK);
	cr_assert_eq(tr_send_every(to, 90 * MS, T_OTHER, NULL, 0, &t[3]), TR_OK);
	cr_assert_eq(tr_stop(to), TR_OK);
	cr_assert(tr_test_latch_wait(&r->cleaned, WAIT_S));
	cr_assert_eq(r->reason, TR_OK);
	sleep_ms(200); /* past every deadline */
	st = stats_of(sys);
	cr_assert_eq(st.dead_letters, 0, "timers of a stopped actor made %llu dead letters",
		     (unsigned long long)st.dead_letters);
	for (unsigned i = 0; i < 4; i++)
		cr_assert_eq(tr_timer_cancel(t[i]), TR_EDEAD, "timer %u of a stopped target", i);
	cr_assert_eq(atomic_load(&r->n), 0);
	st = sys_finish(&sys);
	cr_assert_eq(st.dead_letters, 0);
	rec_free(r);
}

/*
 * "When the target stops, its timers are cancelled": a cancel afterwards
 * finds nothing to cancel (TR_EDEAD), even before the timer's deadline,
 * whether the target was stopped or the whole system shut down.
 */
Test(timer, cancel_after_target_stopped_is_edead)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(0), *r2 = rec_new(0);
	tr_ref to = spawn_rec(sys, r), to2 = spawn_rec(sys, r2);
	tr_timer a, b, c, d;
	int rc;

	cr_assert_eq(tr_send_after(to, 10000 * MS, T_TICK, NULL, 0, &a), TR_OK);
	cr_assert_eq(tr_send_every(to, 10000 * MS, T_TICK, NULL, 0, &b), TR_OK);
	cr_assert_eq(tr_send_after(to2, 10000 * MS, T_TICK, NULL, 0, &c), TR_OK);
	cr_assert_eq(tr_send_every(to2, 10000 * MS, T_TICK, NULL, 0, &d), TR_OK);
	cr_assert_eq(tr_stop(to), TR_OK);
	cr_assert(tr_test_latch_wait(&r->cleaned, WAIT_S));
	sleep_ms(20); /* the stop has finished, the deadlines are far away */
	rc = tr_timer_cancel(a);
	cr_expect_eq(rc, TR_EDEAD, "one-shot of a stopped target: %s", tr_err_name(rc));
	rc = tr_timer_cancel(b);
	cr_expect_eq(rc, TR_EDEAD, "periodic of a stopped target: %s", tr_err_name(rc));
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(r2->reason, TR_ESHUTDOWN);
	rc = tr_timer_cancel(c);
	cr_expect_eq(rc, TR_EDEAD, "one-shot, target shut down: %s", tr_err_name(rc));
	rc = tr_timer_cancel(d);
	cr_expect_eq(rc, TR_EDEAD, "periodic, target shut down: %s", tr_err_name(rc));
	tr_system_destroy(&sys);
	rec_free(r);
	rec_free(r2);
}

/* Timers are not bound by the target's mailbox capacity. */
Test(timer, not_bound_by_mailbox_capacity)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(1);
	tr_actor_opts o = { .behaviour = rec_beh, .state = r, .cleanup = rec_cleanup,
			    .mailbox_capacity = 1, .overflow = TR_OVERFLOW_REJECT };
	tr_ref to;
	struct blk b;
	tr_stats st;

	cr_assert_eq(tr_spawn_opts(sys, &o, &to), TR_OK);
	block(to, &b);
	send_ok(to, T_DATA, NULL, 0);
	cr_assert_eq(tr_send(to, T_DATA, NULL, 0), TR_EFULL, "mailbox should be full");
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, NULL), TR_OK);
	cr_assert(wait_fired(sys, 1));
	unblock(&b);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S), "timer refused by a full mailbox");
	st = sys_finish(&sys);
	cr_assert_eq(st.rejected_full, 1, "only the probe send is rejected");
	blk_destroy(&b);
	rec_free(r);
}

/* Pending timers at shutdown: nothing leaks (ASan), nothing fires late. */
Test(timer, pending_timers_at_shutdown)
{
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	tr_timer t;
	int rc;

	cr_assert_eq(tr_send_after(to, 10000 * MS, T_TICK, "abc", 3, NULL), TR_OK);
	cr_assert_eq(tr_send_every(to, 5000 * MS, T_TICK, NULL, 0, NULL), TR_OK);
	cr_assert_eq(tr_send_every(to, 7000 * MS, T_OTHER, "x", 1, &t), TR_OK);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	tr_system_destroy(&sys);
	rc = tr_timer_cancel(t);
	cr_assert_eq(rc, TR_EDEAD, "timer of a destroyed system: %s", tr_err_name(rc));
	cr_assert_eq(atomic_load(&r->n), 0);
	cr_assert_eq(r->reason, TR_ESHUTDOWN);
	rec_free(r);
}

/* ---------------------------------------------------------- errors */

Test(timer, argument_errors)
{
	tr_system *sys = sys_start(1);
	struct rec *r = rec_new(0);
	tr_ref to = spawn_rec(sys, r);
	char big[TR_MSG_INLINE_MAX + 1] = { 0 };
	tr_timer t = TR_TIMER_NONE;
	tr_stats st;

	cr_assert_eq(tr_send_after(TR_REF_NONE, MS, T_TICK, NULL, 0, &t), TR_EINVAL);
	cr_assert_eq(tr_send_every(TR_REF_NONE, MS, T_TICK, NULL, 0, &t), TR_EINVAL);
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 4, &t), TR_EINVAL);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 4, &t), TR_EINVAL);
	cr_assert_eq(tr_send_after(to, MS, TR_MSG_TYPE_RUNTIME, NULL, 0, &t), TR_EINVAL);
	cr_assert_eq(tr_send_after(to, MS, TR_MSG_DOWN, NULL, 0, &t), TR_EINVAL);
	cr_assert_eq(tr_send_every(to, MS, 0xFFFFFFFFu, NULL, 0, &t), TR_EINVAL);
	cr_assert_eq(tr_send_after(to, MS, T_TICK, big, sizeof(big), &t), TR_E2BIG);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, big, sizeof(big), &t), TR_E2BIG);
	cr_assert_eq(tr_send_every(to, 0, T_TICK, NULL, 0, &t), TR_EINVAL, "period 0");
	cr_assert_eq(tr_send_every(to, 0, T_TICK, "x", 1, NULL), TR_EINVAL, "period 0");
	sleep_ms(10);
	flush(to);
	cr_assert_eq(atomic_load(&r->n), 0, "a refused timer fired");
	st = sys_finish(&sys);
	cr_assert_eq(st.timers_fired, 0);
	rec_free(r);
}

Test(timer, life_cycle_errors)
{
	tr_system *sys = sys_new(1);
	struct rec *r = rec_new(0), *r2 = rec_new(0);
	tr_ref to = spawn_rec(sys, r), to2;
	tr_timer t = TR_TIMER_NONE;

	/* before start */
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, &t), TR_ENOTSTARTED);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 0, &t), TR_ENOTSTARTED);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	to2 = spawn_rec(sys, r2);

	/* stopped target */
	cr_assert_eq(tr_stop(to2), TR_OK);
	cr_assert(tr_test_latch_wait(&r2->cleaned, WAIT_S));
	cr_assert_eq(tr_send_after(to2, MS, T_TICK, NULL, 0, &t), TR_EDEAD);
	cr_assert_eq(tr_send_every(to2, MS, T_TICK, NULL, 0, &t), TR_EDEAD);

	/* shut down, then destroyed */
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, &t), TR_ESHUTDOWN);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 0, &t), TR_ESHUTDOWN);
	tr_system_destroy(&sys);
	cr_assert_eq(tr_send_after(to, MS, T_TICK, NULL, 0, &t), TR_EDEAD);
	cr_assert_eq(tr_send_every(to, MS, T_TICK, NULL, 0, &t), TR_EDEAD);
	cr_assert_eq(atomic_load(&r->n), 0);
	rec_free(r);
	rec_free(r2);
}

/* timers_fired counts timer messages sent: fired one-shots, not cancelled
 * ones. */
Test(timer, timers_fired_counts)
{
	enum { N = 20, C = 5 };
	tr_system *sys = sys_start(2);
	struct rec *r = rec_new(N);
	tr_ref to = spawn_rec(sys, r);
	tr_timer c[C];
	tr_stats st;

	for (int i = 0; i < C; i++)
		cr_assert_eq(tr_send_after(to, 10000 * MS, T_OTHER, NULL, 0, &c[i]), TR_OK);
	for (int i = 0; i < N; i++)
		cr_assert_eq(tr_send_after(to, (uint64_t)i * MS / 4, T_TICK, NULL, 0, NULL), TR_OK);
	for (int i = 0; i < C; i++)
		cr_assert_eq(tr_timer_cancel(c[i]), TR_OK);
	cr_assert(tr_test_latch_wait(&r->got, WAIT_S));
	flush(to);
	cr_assert(wait_fired(sys, N));
	st = sys_finish(&sys);
	cr_assert_eq(atomic_load(&r->n), N);
	cr_assert_eq(st.timers_fired, N, "timers_fired %llu, want %d",
		     (unsigned long long)st.timers_fired, N);
	rec_free(r);
}
