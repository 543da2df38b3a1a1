/*
 * Unit tests for troupe/message.h: tr_send copy semantics and errors,
 * tr_send_ptr ownership, per-sender order, life-cycle errors and bounded
 * mailboxes.
 *
 * Ordering is done with latches; the few sleeps only give a wrong event time
 * to happen or pace a poll. To hold messages in a mailbox
 * the tests occupy the only worker of a one-worker system with a "blocker"
 * actor parked on a latch: nothing else can run until the test releases it,
 * so what sits in a mailbox is exactly what the test sent.
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

TestSuite(message, .timeout = 120);
TestSuite(bounded, .timeout = 120);

enum {
	T_DATA = 0x100,
	T_FLUSH,
	T_BLOCK,
	T_PROBE,
	T_GO,
};

/* ---- systems ---- */

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
	cr_assert_eq(tr_system_workers(sys), workers);
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

static tr_ref spawn(tr_system *sys, tr_behaviour b, void *state)
{
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn(sys, b, state, &r), TR_OK);
	cr_assert(!tr_ref_is_none(r));
	return r;
}

static tr_ref spawn_bounded(tr_system *sys, tr_behaviour b, void *state,
			    uint32_t cap, tr_overflow ov, uint32_t wait_ms)
{
	tr_actor_opts o = {
		.behaviour = b,
		.state = state,
		.mailbox_capacity = cap,
		.overflow = ov,
		.overflow_wait_ms = wait_ms,
	};
	tr_ref r = TR_REF_NONE;

	cr_assert_eq(tr_spawn_opts(sys, &o, &r), TR_OK);
	return r;
}

static void send_ok(tr_ref to, uint32_t type, const void *data, size_t size)
{
	int rc = tr_send(to, type, data, size);

	cr_assert_eq(rc, TR_OK, "tr_send: %s", tr_err_name(rc));
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- blocker: parks its worker until released ---- */

struct blocker {
	tr_test_latch entered;
	tr_test_latch release;
	tr_ref ref;
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

/* Returns once the blocker runs on a worker and will stay there. */
static void blocker_hold(tr_system *sys, struct blocker *b)
{
	tr_test_latch_init(&b->entered, 1);
	tr_test_latch_init(&b->release, 1);
	b->ref = spawn(sys, blocker_beh, b);
	send_ok(b->ref, T_BLOCK, NULL, 0);
	cr_assert(tr_test_latch_wait(&b->entered, WAIT_S), "blocker never ran");
}

static void blocker_release(struct blocker *b)
{
	tr_test_latch_count_down(&b->release);
}

/* ---- recorder: keeps what it was sent ---- */

struct recorder {
	tr_test_latch flushed; /* one count per T_FLUSH */
	tr_test_latch got;     /* one count per T_DATA */
	unsigned n;            /* T_DATA messages seen */
	uint32_t type;
	tr_ref sender;
	size_t size;
	bool was_ptr;
	unsigned char bytes[TR_MSG_INLINE_MAX];
	uint64_t seq[64];      /* first payload word of the first 64 T_DATA */
};

static void recorder_init(struct recorder *r, uint64_t expect_data)
{
	memset(r, 0, sizeof(*r));
	tr_test_latch_init(&r->flushed, 1);
	tr_test_latch_init(&r->got, expect_data);
}

static int recorder_beh(void *state, tr_msg *m)
{
	struct recorder *r = state;

	if (tr_msg_type(m) == T_FLUSH) {
		tr_test_latch_count_down(&r->flushed);
		return 0;
	}
	if (tr_msg_type(m) == T_PROBE)
		return 0;
	r->type = tr_msg_type(m);
	r->sender = tr_msg_sender(m);
	r->size = tr_msg_size(m);
	r->was_ptr = tr_msg_data(m) == NULL;
	if (!r->was_ptr && r->size <= sizeof(r->bytes))
		memcpy(r->bytes, tr_msg_data(m), r->size);
	if (r->n < 64 && r->size >= sizeof(uint64_t))
		memcpy(&r->seq[r->n], tr_msg_data(m), sizeof(uint64_t));
	r->n++;
	tr_test_latch_count_down(&r->got);
	return 0;
}

/* Per-sender FIFO makes a flush from the same thread a barrier: once it is
 * seen, everything this thread sent before it was delivered or refused. */
static void recorder_flush(struct recorder *r, tr_ref ref)
{
	send_ok(ref, T_FLUSH, NULL, 0);
	cr_assert(tr_test_latch_wait(&r->flushed, WAIT_S), "flush never arrived");
}

/*
 * Sends probes until `r` refuses them. The cleanup hook may still be running
 * when the test wakes, and the reference turns stale around it; probes
 * accepted meanwhile become undelivered dead letters. Adds exactly one
 * refused dead letter.
 */
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

/* ---- copy semantics ---- */

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 31u + i * 7u + 1u);
}

/*
 * The receiver is held off the worker until the sender has overwritten and
 * freed its buffer, so a runtime that kept the pointer instead of copying
 * delivers garbage (or trips ASan).
 */
static void check_payload(tr_system *sys, size_t size)
{
	struct blocker b;
	struct recorder r;
	unsigned char want[TR_MSG_INLINE_MAX];
	unsigned char *buf = malloc(size ? size : 1);
	uint32_t type = 0xC0DE0000u + (uint32_t)size;
	tr_ref to;

	cr_assert_not_null(buf);
	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	blocker_hold(sys, &b);

	fill_pattern(want, size, (unsigned)size);
	memcpy(buf, want, size);
	send_ok(to, type, size ? buf : NULL, size);
	memset(buf, 0xAA, size ? size : 1);
	free(buf);

	blocker_release(&b);
	recorder_flush(&r, to);
	cr_assert_eq(r.n, 1, "size %zu", size);
	cr_assert_eq(r.type, type);
	cr_assert_not(r.was_ptr, "inline payload reported as pointer");
	cr_assert_eq(r.size, size);
	cr_assert_arr_eq(r.bytes, want, size, "payload of %zu bytes corrupted", size);
}

Test(message, payload_copied_at_size_boundaries)
{
	static const size_t sizes[] = { 0, 1, 32, 33, 96, 97, TR_MSG_INLINE_MAX };
	tr_system *sys = sys_start(1);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_payload(sys, sizes[i]);
	sys_finish(&sys);
}

Test(message, zero_size_with_data_pointer)
{
	tr_system *sys = sys_start(1);
	struct recorder r;
	int x = 42;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	send_ok(to, T_DATA, &x, 0);
	recorder_flush(&r, to);
	cr_assert_eq(r.n, 1);
	cr_assert_eq(r.size, 0);
	sys_finish(&sys);
}

Test(message, e2big_above_inline_max)
{
	static unsigned char big[4096];
	tr_system *sys = sys_start(1);
	struct recorder r;
	tr_stats st;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	cr_assert_eq(tr_send(to, T_DATA, big, TR_MSG_INLINE_MAX + 1), TR_E2BIG);
	cr_assert_eq(tr_send(to, T_DATA, big, sizeof(big)), TR_E2BIG);
	recorder_flush(&r, to);
	cr_assert_eq(r.n, 0, "a refused message was delivered");
	st = sys_finish(&sys);
	cr_assert_eq(st.sent, 1, "only the flush was sent");
	cr_assert_eq(st.dead_letters, 0, "E2BIG is not a dead letter");
}

Test(message, einval_on_bad_arguments)
{
	tr_system *sys = sys_start(1);
	struct recorder r;
	void *p = &r;
	tr_stats st;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	cr_assert_eq(tr_send(to, T_DATA, NULL, 1), TR_EINVAL);
	cr_assert_eq(tr_send(to, T_DATA, NULL, TR_MSG_INLINE_MAX), TR_EINVAL);
	cr_assert_eq(tr_send(TR_REF_NONE, T_DATA, "x", 1), TR_EINVAL);
	cr_assert_eq(tr_send(TR_REF_NONE, T_DATA, NULL, 0), TR_EINVAL);
	cr_assert_eq(tr_send_ptr(to, T_DATA, NULL, NULL), TR_EINVAL);
	cr_assert_eq(tr_send_ptr(TR_REF_NONE, T_DATA, &p, NULL), TR_EINVAL);
	cr_assert_eq(p, &r, "ownership must stay with the caller on error");
	recorder_flush(&r, to);
	cr_assert_eq(r.n, 0, "a refused message was delivered");
	st = sys_finish(&sys);
	cr_assert_eq(st.sent, 1, "only the flush was sent");
}

/* ---- type and sender ---- */

Test(message, type_and_none_sender_from_main_thread)
{
	tr_system *sys = sys_start(2);
	struct recorder r;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	/* the runtime's own types are refused; the largest user type is fine */
	cr_assert_eq(tr_send(to, TR_MSG_TYPE_RUNTIME, "abc", 3), TR_EINVAL);
	cr_assert_eq(tr_send(to, 0xFFFFFFFFu, "abc", 3), TR_EINVAL);
	send_ok(to, TR_MSG_TYPE_RUNTIME - 1, "abc", 3);
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	cr_assert_eq(r.type, TR_MSG_TYPE_RUNTIME - 1);
	cr_assert(tr_ref_is_none(r.sender), "sender %#llx",
		  (unsigned long long)r.sender.id);
	sys_finish(&sys);
}

struct relay {
	tr_ref self;  /* tr_self() as the relay saw it */
	int rc;       /* its tr_send result */
	tr_test_latch done;
};

/* On T_GO, forwards one T_DATA to the reference carried in the payload. */
static int relay_beh(void *state, tr_msg *m)
{
	struct relay *rl = state;
	tr_ref to;

	if (tr_msg_type(m) != T_GO)
		return 0;
	memcpy(&to, tr_msg_data(m), sizeof(to));
	rl->self = tr_self();
	rl->rc = tr_send(to, T_DATA, "hi", 2);
	tr_test_latch_count_down(&rl->done);
	return 0;
}

Test(message, sender_is_sending_actor)
{
	tr_system *sys = sys_start(2);
	struct recorder r;
	struct relay rl = { .rc = 1 };
	tr_ref to, from;

	recorder_init(&r, 1);
	tr_test_latch_init(&rl.done, 1);
	to = spawn(sys, recorder_beh, &r);
	from = spawn(sys, relay_beh, &rl);
	send_ok(from, T_GO, &to, sizeof(to));
	cr_assert(tr_test_latch_wait(&rl.done, WAIT_S));
	cr_assert_eq(rl.rc, TR_OK);
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	cr_assert(tr_ref_eq(rl.self, from));
	cr_assert(tr_ref_eq(r.sender, from), "sender %#llx, want %#llx",
		  (unsigned long long)r.sender.id, (unsigned long long)from.id);
	cr_assert_eq(r.type, T_DATA);
	cr_assert_eq(r.size, 2);
	cr_assert_arr_eq(r.bytes, "hi", 2);
	sys_finish(&sys);
}

/* ---- tr_send_ptr ownership ---- */

static atomic_int dtor_calls;
static void *_Atomic dtor_last;

static void counting_dtor(void *p)
{
	atomic_store(&dtor_last, p);
	atomic_fetch_add(&dtor_calls, 1);
	free(p);
}

static void *payload_new(void)
{
	void *p = malloc(64);

	cr_assert_not_null(p);
	return p;
}

struct ptr_sink {
	bool take;              /* take the payload or leave it to the dtor */
	void *seen;             /* tr_msg_ptr before taking */
	bool data_null;         /* tr_msg_data is NULL for pointer payloads */
	size_t size;
	void *second_take;      /* tr_msg_take after the first one */
	void *ptr_after_take;
	int dtor_calls_inside;  /* the dtor must not run before we return */
	unsigned n;
	tr_test_latch got;
};

static int ptr_sink_beh(void *state, tr_msg *m)
{
	struct ptr_sink *s = state;

	if (tr_msg_type(m) != T_DATA)
		return 0;
	s->n++;
	s->seen = tr_msg_ptr(m);
	s->data_null = tr_msg_data(m) == NULL;
	s->size = tr_msg_size(m);
	s->dtor_calls_inside = atomic_load(&dtor_calls);
	if (s->take) {
		void *p = tr_msg_take(m);

		s->second_take = tr_msg_take(m);
		s->ptr_after_take = tr_msg_ptr(m);
		free(p);
	}
	tr_test_latch_count_down(&s->got);
	return 0;
}

static void check_send_ptr(bool take)
{
	tr_system *sys = sys_start(2);
	struct ptr_sink s = { .take = take, .second_take = &s, .ptr_after_take = &s };
	void *p = payload_new();
	void *orig = p;
	tr_ref to;

	tr_test_latch_init(&s.got, 1);
	to = spawn(sys, ptr_sink_beh, &s);
	cr_assert_eq(tr_send_ptr(to, T_DATA, &p, counting_dtor), TR_OK);
	cr_assert_null(p, "*ptr_p must be NULL once the runtime owns it");
	cr_assert(tr_test_latch_wait(&s.got, WAIT_S));
	sys_finish(&sys);

	cr_assert_eq(s.n, 1);
	cr_assert_eq(s.seen, orig, "receiver saw a different pointer");
	cr_assert(s.data_null, "tr_msg_data must be NULL for a pointer payload");
	cr_assert_eq(s.size, 0);
	cr_assert_eq(s.dtor_calls_inside, 0, "dtor ran while the behaviour held the message");
	if (take) {
		cr_assert_null(s.second_take, "payload taken twice");
		cr_assert_null(s.ptr_after_take);
		cr_assert_eq(atomic_load(&dtor_calls), 0, "dtor ran on a taken payload");
	} else {
		cr_assert_eq(atomic_load(&dtor_calls), 1, "dtor must run exactly once");
		cr_assert_eq(atomic_load(&dtor_last), orig);
	}
}

Test(message, send_ptr_taken_skips_dtor)
{
	check_send_ptr(true);
}

Test(message, send_ptr_not_taken_runs_dtor_once)
{
	check_send_ptr(false);
}

Test(message, send_ptr_null_payload_is_valid)
{
	tr_system *sys = sys_start(1);
	struct ptr_sink s = { .seen = &s };
	void *p = NULL;
	tr_ref to;

	tr_test_latch_init(&s.got, 1);
	to = spawn(sys, ptr_sink_beh, &s);
	cr_assert_eq(tr_send_ptr(to, T_DATA, &p, NULL), TR_OK);
	cr_assert(tr_test_latch_wait(&s.got, WAIT_S));
	cr_assert_null(s.seen);
	cr_assert(s.data_null);
	sys_finish(&sys);
}

/* On every error the caller still owns the pointer: unchanged, never freed. */
Test(message, send_ptr_error_keeps_ownership)
{
	tr_system *sys = sys_new(1);
	struct recorder r;
	void *p = payload_new();
	void *orig = p;
	tr_ref to, dead;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	dead = spawn(sys, recorder_beh, &r);

	cr_assert_eq(tr_send_ptr(to, T_DATA, &p, counting_dtor), TR_ENOTSTARTED);
	cr_assert_eq(p, orig);

	cr_assert_eq(tr_system_start(sys), TR_OK);
	cr_assert_eq(tr_send_ptr(TR_REF_NONE, T_DATA, &p, counting_dtor), TR_EINVAL);
	cr_assert_eq(p, orig);

	cr_assert_eq(tr_stop(dead), TR_OK);
	wait_dead(dead);
	cr_assert_eq(tr_send_ptr(dead, T_DATA, &p, counting_dtor), TR_EDEAD);
	cr_assert_eq(p, orig);

	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_send_ptr(to, T_DATA, &p, counting_dtor), TR_ESHUTDOWN);
	cr_assert_eq(p, orig);

	tr_system_destroy(&sys);
	cr_assert_eq(tr_send_ptr(to, T_DATA, &p, counting_dtor), TR_EDEAD);
	cr_assert_eq(p, orig);
	cr_assert_eq(atomic_load(&dtor_calls), 0, "runtime freed a pointer it did not own");
	cr_assert_eq(r.n, 0);
	free(p);
}

/*
 * Messages sent after tr_stop are accepted (the actor has not stopped yet)
 * but never delivered: the pointer one is destroyed exactly once and both
 * count as undelivered.
 */
Test(message, accepted_after_stop_is_undelivered)
{
	tr_system *sys = sys_start(1);
	struct blocker b;
	void *p = payload_new();
	tr_stats st;

	blocker_hold(sys, &b);
	cr_assert_eq(tr_stop(b.ref), TR_OK);
	cr_assert_eq(tr_send_ptr(b.ref, T_DATA, &p, counting_dtor), TR_OK);
	cr_assert_null(p);
	send_ok(b.ref, T_DATA, "x", 1);
	blocker_release(&b);
	wait_dead(b.ref);

	st = sys_finish(&sys);
	cr_assert_eq(atomic_load(&dtor_calls), 1, "undelivered payload destroyed %d times",
		     atomic_load(&dtor_calls));
	/* The probes wait_dead got accepted are undelivered as well. */
	cr_assert_geq(st.undelivered, 2);
	cr_assert_eq(st.delivered, 1, "only T_BLOCK may be delivered");
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
	cr_assert_eq(st.dead_letters, st.undelivered + 1);
}

struct releaser {
	tr_ref probe_to;
	struct blocker *b;
	int probes_ok;
};

/* Frees the blocker once the system refuses sends, i.e. once the immediate
 * shutdown has begun, so the queued messages must be dropped, not run. */
static void *releaser_main(void *arg)
{
	struct releaser *rl = arg;
	double end = tr_test_now() + WAIT_S;

	while (tr_send(rl->probe_to, T_PROBE, NULL, 0) == TR_OK && tr_test_now() < end) {
		rl->probes_ok++;
		sleep_ms(1);
	}
	blocker_release(rl->b);
	return NULL;
}

Test(message, immediate_shutdown_destroys_queued_payloads)
{
	enum { K = 200 };
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct releaser rl = { .b = &b };
	pthread_t th;
	tr_stats st;

	blocker_hold(sys, &b);
	for (int i = 0; i < K; i++) {
		void *p = payload_new();

		cr_assert_eq(tr_send_ptr(b.ref, T_DATA, &p, counting_dtor), TR_OK);
	}
	rl.probe_to = b.ref;
	cr_assert_eq(pthread_create(&th, NULL, releaser_main, &rl), 0);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_IMMEDIATE), TR_OK);
	pthread_join(th, NULL);
	cr_assert_eq(tr_system_stats(sys, &st), TR_OK);
	tr_system_destroy(&sys);

	cr_assert_eq(atomic_load(&dtor_calls), K, "dtor calls %d, want %d",
		     atomic_load(&dtor_calls), K);
	cr_assert_eq(st.delivered, 1, "only T_BLOCK may be delivered");
	cr_assert_eq(st.sent, 1 + K + (uint64_t)rl.probes_ok);
	cr_assert_eq(st.undelivered, K + (uint64_t)rl.probes_ok);
	cr_assert_eq(st.sent, st.delivered + st.undelivered);
}

/* ---- per-sender FIFO ---- */

#define MAX_SENDERS 8

struct seqmsg {
	uint32_t sender;
	uint64_t seq;
};

struct seq_sink {
	uint64_t expect[MAX_SENDERS];
	uint64_t received, total;
	uint64_t disorder;      /* messages that arrived out of order */
	tr_ref want_from;       /* if not none, every sender must be this */
	uint64_t wrong_sender;
	tr_test_latch done;
};

static int seq_sink_beh(void *state, tr_msg *m)
{
	struct seq_sink *s = state;
	struct seqmsg sm;

	if (tr_msg_size(m) != sizeof(sm)) {
		s->disorder++;
		return 0;
	}
	memcpy(&sm, tr_msg_data(m), sizeof(sm));
	if (sm.sender >= MAX_SENDERS || sm.seq != s->expect[sm.sender])
		s->disorder++;
	else
		s->expect[sm.sender]++;
	if (!tr_ref_is_none(s->want_from) && !tr_ref_eq(tr_msg_sender(m), s->want_from))
		s->wrong_sender++;
	if (++s->received == s->total)
		tr_test_latch_count_down(&s->done);
	return 0;
}

static void seq_sink_init(struct seq_sink *s, uint64_t total)
{
	memset(s, 0, sizeof(*s));
	s->total = total;
	tr_test_latch_init(&s->done, 1);
}

static int send_seq(tr_ref to, uint32_t sender, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		struct seqmsg sm = { sender, i };
		int rc = tr_send(to, T_DATA, &sm, sizeof(sm));

		if (rc != TR_OK)
			return rc;
	}
	return TR_OK;
}

static void check_seq_sink(struct seq_sink *s, unsigned senders, uint64_t per)
{
	cr_assert(tr_test_latch_wait(&s->done, WAIT_S), "only %llu of %llu arrived",
		  (unsigned long long)s->received, (unsigned long long)s->total);
	cr_assert_eq(s->disorder, 0, "%llu messages out of order",
		     (unsigned long long)s->disorder);
	for (unsigned i = 0; i < senders; i++)
		cr_assert_eq(s->expect[i], per);
	cr_assert_eq(s->wrong_sender, 0);
}

Test(message, fifo_one_thread_100k)
{
	enum { N = 100000 };
	tr_system *sys = sys_start(2);
	struct seq_sink s;
	tr_stats st;
	tr_ref to;

	seq_sink_init(&s, N);
	to = spawn(sys, seq_sink_beh, &s);
	cr_assert_eq(send_seq(to, 0, N), TR_OK);
	check_seq_sink(&s, 1, N);
	st = sys_finish(&sys);
	cr_assert_eq(st.sent, N);
	cr_assert_eq(st.delivered, N);
}

struct seq_thread {
	tr_ref to;
	uint32_t idx;
	uint64_t n;
	int rc;
};

static void *seq_thread_main(void *arg)
{
	struct seq_thread *t = arg;

	t->rc = send_seq(t->to, t->idx, t->n);
	return NULL;
}

/* Order holds per sender while several senders interleave. */
Test(message, fifo_per_sender_many_threads)
{
	enum { THREADS = 4, PER = 25000 };
	tr_system *sys = sys_start(2);
	struct seq_sink s;
	struct seq_thread t[THREADS];
	pthread_t th[THREADS];
	tr_ref to;

	seq_sink_init(&s, (uint64_t)THREADS * PER);
	to = spawn(sys, seq_sink_beh, &s);
	for (unsigned i = 0; i < THREADS; i++) {
		t[i] = (struct seq_thread){ .to = to, .idx = i, .n = PER, .rc = 1 };
		cr_assert_eq(pthread_create(&th[i], NULL, seq_thread_main, &t[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(t[i].rc, TR_OK, "sender %u: %s", i, tr_err_name(t[i].rc));
	}
	check_seq_sink(&s, THREADS, PER);
	sys_finish(&sys);
}

struct seq_sender {
	tr_ref to;
	uint64_t n;
	int rc;
	tr_test_latch done;
};

static int seq_sender_beh(void *state, tr_msg *m)
{
	struct seq_sender *ss = state;

	if (tr_msg_type(m) == T_GO) {
		ss->rc = send_seq(ss->to, 0, ss->n);
		tr_test_latch_count_down(&ss->done);
	}
	return 0;
}

Test(message, fifo_from_an_actor)
{
	enum { N = 20000 };
	tr_system *sys = sys_start(2);
	struct seq_sink s;
	struct seq_sender ss = { .n = N, .rc = 1 };
	tr_ref from;

	seq_sink_init(&s, N);
	tr_test_latch_init(&ss.done, 1);
	ss.to = spawn(sys, seq_sink_beh, &s);
	from = spawn(sys, seq_sender_beh, &ss);
	s.want_from = from;
	send_ok(from, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&ss.done, WAIT_S));
	cr_assert_eq(ss.rc, TR_OK, "%s", tr_err_name(ss.rc));
	check_seq_sink(&s, 1, N);
	sys_finish(&sys);
}

/* ---- life cycle ---- */

Test(message, send_before_start_is_enotstarted)
{
	tr_system *sys = sys_new(1);
	struct recorder r;
	tr_stats st;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	cr_assert_eq(tr_send(to, T_DATA, "a", 1), TR_ENOTSTARTED);
	cr_assert_eq(tr_system_start(sys), TR_OK);
	send_ok(to, T_DATA, "b", 1);
	recorder_flush(&r, to);
	cr_assert_eq(r.n, 1, "the refused message arrived");
	cr_assert_eq(r.bytes[0], 'b');
	st = sys_finish(&sys);
	cr_assert_eq(st.sent, 2);
}

Test(message, send_after_shutdown_is_eshutdown)
{
	tr_system *sys = sys_start(1);
	struct recorder r;
	tr_stats before, after;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	cr_assert_eq(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), TR_OK);
	cr_assert_eq(tr_system_stats(sys, &before), TR_OK);
	cr_assert_eq(tr_send(to, T_DATA, "a", 1), TR_ESHUTDOWN);
	cr_assert_eq(tr_send(to, T_DATA, NULL, 0), TR_ESHUTDOWN);
	cr_assert_eq(tr_system_stats(sys, &after), TR_OK);
	cr_assert_eq(after.dead_letters, before.dead_letters + 2,
		     "refused sends during shutdown are dead letters");
	cr_assert_eq(after.sent, before.sent);
	tr_system_destroy(&sys);
	cr_assert_eq(r.n, 0);
}

Test(message, send_after_destroy_is_edead)
{
	tr_system *sys = sys_start(1);
	struct recorder r;
	tr_ref to;

	recorder_init(&r, 1);
	to = spawn(sys, recorder_beh, &r);
	tr_system_destroy(&sys);
	cr_assert_null(sys);
	cr_assert_eq(tr_send(to, T_DATA, "a", 1), TR_EDEAD);
	cr_assert_eq(tr_send(to, T_DATA, NULL, 0), TR_EDEAD);
	cr_assert_eq(tr_stop(to), TR_EDEAD);
	cr_assert_eq(r.n, 0);
}

/*
 * A thread that sent into (or shut down) one system and then sends into
 * another must not touch the first one after it was destroyed (the
 * per-thread message cache once looked it up through its freed struct).
 */
Test(message, send_after_other_system_destroyed)
{
	tr_system *first = sys_start(1), *second;
	struct recorder r1, r2;
	tr_ref to;

	recorder_init(&r1, 1);
	recorder_init(&r2, 1);
	to = spawn(first, recorder_beh, &r1);
	recorder_flush(&r1, to);
	sys_finish(&first);

	second = sys_start(1);
	to = spawn(second, recorder_beh, &r2);
	recorder_flush(&r2, to);
	sys_finish(&second);
}

/* ---- bounded mailboxes ---- */

/* Fills `to` from this thread until the first refusal; returns how many fit. */
static unsigned fill(tr_ref to, unsigned max, int *rc_out)
{
	unsigned n;
	int rc = TR_OK;

	for (n = 0; n < max; n++) {
		uint64_t seq = n;

		rc = tr_send(to, T_DATA, &seq, sizeof(seq));
		if (rc != TR_OK)
			break;
	}
	*rc_out = rc;
	return n;
}

Test(bounded, reject_when_full)
{
	enum { CAP = 4 };
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct recorder r;
	tr_stats st;
	tr_ref to;
	int rc;

	recorder_init(&r, CAP);
	to = spawn_bounded(sys, recorder_beh, &r, CAP, TR_OVERFLOW_REJECT, 0);
	blocker_hold(sys, &b);
	cr_assert_eq(fill(to, 1000, &rc), CAP);
	cr_assert_eq(rc, TR_EFULL, "%s", tr_err_name(rc));
	cr_assert_eq(tr_send(to, T_DATA, "x", 1), TR_EFULL);
	blocker_release(&b);
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	st = sys_finish(&sys);

	cr_assert_eq(r.n, CAP, "refused messages were delivered");
	for (unsigned i = 0; i < CAP; i++)
		cr_assert_eq(r.seq[i], i);
	cr_assert_eq(st.rejected_full, 2);
	cr_assert_eq(st.sent, CAP + 1, "the blocker's message and CAP data");
	cr_assert_eq(st.dead_letters, 0, "a full mailbox is not a dead letter");
}

Test(bounded, wait_times_out_when_nobody_drains)
{
	enum { CAP = 2 };
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct recorder r;
	tr_ref to;
	int rc;

	recorder_init(&r, CAP);
	to = spawn_bounded(sys, recorder_beh, &r, CAP, TR_OVERFLOW_WAIT, 20);
	blocker_hold(sys, &b);
	cr_assert_eq(fill(to, CAP, &rc), CAP);
	rc = tr_send(to, T_DATA, "x", 1);
	cr_assert_eq(rc, TR_ETIMEDOUT, "%s", tr_err_name(rc));
	blocker_release(&b);
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(r.n, CAP, "the timed-out message was delivered");
}

static void *release_soon(void *arg)
{
	/* Gives the main thread time to block in tr_send; if it has not yet,
	 * the send simply finds room and the test still holds. */
	sleep_ms(20);
	blocker_release(arg);
	return NULL;
}

Test(bounded, wait_succeeds_once_drained)
{
	enum { CAP = 2 };
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct recorder r;
	uint64_t last = CAP;
	pthread_t th;
	tr_ref to;
	int rc;

	recorder_init(&r, CAP + 1);
	to = spawn_bounded(sys, recorder_beh, &r, CAP, TR_OVERFLOW_WAIT, WAIT_S * 1000);
	blocker_hold(sys, &b);
	cr_assert_eq(fill(to, CAP, &rc), CAP);
	cr_assert_eq(pthread_create(&th, NULL, release_soon, &b), 0);
	rc = tr_send(to, T_DATA, &last, sizeof(last));
	pthread_join(th, NULL);
	cr_assert_eq(rc, TR_OK, "%s", tr_err_name(rc));
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(r.n, CAP + 1);
	cr_assert_eq(r.seq[CAP], CAP);
}

struct filler {
	tr_ref to;
	unsigned accepted;
	int rc;
	tr_test_latch done;
};

static int filler_beh(void *state, tr_msg *m)
{
	struct filler *f = state;

	if (tr_msg_type(m) == T_GO) {
		f->accepted = fill(f->to, 1000, &f->rc);
		tr_test_latch_count_down(&f->done);
	}
	return 0;
}

/*
 * Two workers: one parked by the blocker, the other running the filler, so
 * the receiver cannot drain while the filler sends. A worker that blocked on
 * the full WAIT mailbox would sit out the 30 s wait and get TR_ETIMEDOUT.
 */
Test(bounded, worker_sender_gets_efull_never_blocks)
{
	enum { CAP = 3 };
	tr_system *sys = sys_start(2);
	struct blocker b;
	struct recorder r;
	struct filler f = { .rc = 1 };
	tr_ref from;

	recorder_init(&r, CAP);
	tr_test_latch_init(&f.done, 1);
	f.to = spawn_bounded(sys, recorder_beh, &r, CAP, TR_OVERFLOW_WAIT, WAIT_S * 1000);
	from = spawn(sys, filler_beh, &f);
	blocker_hold(sys, &b);
	send_ok(from, T_GO, NULL, 0);
	cr_assert(tr_test_latch_wait(&f.done, WAIT_S + 10));
	blocker_release(&b);
	cr_assert_eq(f.rc, TR_EFULL, "%s", tr_err_name(f.rc));
	cr_assert_eq(f.accepted, CAP);
	cr_assert(tr_test_latch_wait(&r.got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(r.n, CAP);
}

struct stop_watch {
	struct recorder r;
	int reason;
	unsigned n_at_cleanup;
	int cleanups;
	tr_test_latch cleaned;
};

static void stop_watch_cleanup(void *state, int reason)
{
	struct stop_watch *w = state;

	w->reason = reason;
	w->n_at_cleanup = w->r.n;
	w->cleanups++;
	tr_test_latch_count_down(&w->cleaned);
}

/* tr_stop is a runtime message: the capacity does not bind it. */
Test(bounded, stop_gets_through_full_mailbox)
{
	enum { CAP = 2 };
	tr_system *sys = sys_start(1);
	struct blocker b;
	struct stop_watch w = { .reason = 12345 };
	tr_actor_opts o = {
		.behaviour = recorder_beh,
		.state = &w, /* the recorder is the first member */
		.cleanup = stop_watch_cleanup,
		.mailbox_capacity = CAP,
		.overflow = TR_OVERFLOW_REJECT,
	};
	tr_ref to;
	int rc;

	recorder_init(&w.r, CAP);
	tr_test_latch_init(&w.cleaned, 1);
	cr_assert_eq(tr_spawn_opts(sys, &o, &to), TR_OK);
	blocker_hold(sys, &b);
	cr_assert_eq(fill(to, 100, &rc), CAP);
	cr_assert_eq(rc, TR_EFULL);
	cr_assert_eq(tr_stop(to), TR_OK);
	blocker_release(&b);
	cr_assert(tr_test_latch_wait(&w.cleaned, WAIT_S), "stop never got through");
	sys_finish(&sys);
	cr_assert_eq(w.reason, TR_OK);
	cr_assert_eq(w.n_at_cleanup, CAP, "queued messages come before the stop");
	cr_assert_eq(w.cleanups, 1);
}

/* Capacity 0 in the options takes the system default; TR_MAILBOX_UNBOUNDED opts out. */
Test(bounded, system_default_and_unbounded_override)
{
	enum { CAP = 2, MANY = 500 };
	tr_config cfg;
	tr_system *sys = NULL;
	struct blocker b;
	struct recorder rd, ru;
	tr_ref def, unb;
	int rc;

	cr_assert_eq(tr_config_init(&cfg), TR_OK);
	cfg.workers = 1;
	cfg.mailbox_capacity = CAP;
	cfg.overflow = TR_OVERFLOW_REJECT;
	cr_assert_eq(tr_system_new(&cfg, &sys), TR_OK);
	cr_assert_eq(tr_system_start(sys), TR_OK);

	recorder_init(&rd, CAP);
	recorder_init(&ru, MANY);
	def = spawn(sys, recorder_beh, &rd);
	unb = spawn_bounded(sys, recorder_beh, &ru, TR_MAILBOX_UNBOUNDED,
			    TR_OVERFLOW_REJECT, 0);
	blocker_hold(sys, &b);
	cr_assert_eq(fill(def, 100, &rc), CAP);
	cr_assert_eq(rc, TR_EFULL);
	cr_assert_eq(fill(unb, MANY, &rc), MANY);
	cr_assert_eq(rc, TR_OK);
	blocker_release(&b);
	cr_assert(tr_test_latch_wait(&rd.got, WAIT_S));
	cr_assert(tr_test_latch_wait(&ru.got, WAIT_S));
	sys_finish(&sys);
	cr_assert_eq(rd.n, CAP);
	cr_assert_eq(ru.n, MANY);
}
