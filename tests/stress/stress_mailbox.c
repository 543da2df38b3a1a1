/*
 * stress_mailbox: many senders, one receiver.
 *
 * Four plain threads and four actors each send a numbered stream to one
 * receiver actor, SCALE data messages in all. The receiver checks that every
 * stream arrives in order, with nothing lost and nothing twice, and that each
 * message names its real sender. Afterwards the system's counters must agree
 * with what the senders counted themselves.
 *
 * Usage: stress_mailbox SCALE
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "troupe.h"
#include "../support.h"
#include "stress.h"

enum { N_THREADS = 4, N_ACTORS = 4, N_SENDERS = N_THREADS + N_ACTORS };
enum { MSG_DATA = 1, MSG_END, MSG_MORE };

#define DEADLINE_S 120
/* Messages an actor sender sends per message it handles: big enough to
 * load the mailbox, small enough that it never hogs a worker for long. */
#define CHUNK 1000
/* Accepted-but-undelivered messages the senders may run ahead by; the
 * mailboxes are unbounded, so without this a slow receiver would let the
 * senders queue the whole run. */
#define BACKLOG_MAX (64u * 1024u)

/* ---- checks ---- */

static uint64_t parse_scale(int argc, char **argv)
{
	unsigned long long v;
	char *end;

	if (argc < 2)
		return 2000000;
	errno = 0;
	v = strtoull(argv[1], &end, 10);
	if (errno || *end || v == 0) {
		fprintf(stderr, "usage: %s SCALE (a positive integer)\n", argv[0]);
		exit(2);
	}
	return v;
}

/* ---- pacing ---- */

static tr_system *sys;

/* ---- actors' common bookkeeping ---- */

/* First member of every actor state, so one cleanup hook serves them all. */
struct life {
	atomic_uint cleanups;
	atomic_int reason;
};

static void on_cleanup(void *state, int reason)
{
	struct life *l = state;

	atomic_store(&l->reason, reason);
	atomic_fetch_add(&l->cleanups, 1);
}

static int spawn(void *state, tr_behaviour fn, tr_ref *out)
{
	tr_actor_opts o = { .behaviour = fn, .state = state, .cleanup = on_cleanup };

	return tr_spawn_opts(sys, &o, out);
}

/* ---- the streams ---- */

struct data {
	uint32_t sender;
	uint32_t pad;
	uint64_t seq;
	uint64_t check; /* catches a payload mangled or copied from another message */
};

struct end {
	uint32_t sender;
	uint32_t pad;
	uint64_t count; /* data messages this sender got accepted */
};

static uint64_t mix(uint64_t a, uint64_t b)
{
	uint64_t z = a * 0x9e3779b97f4a7c15u + b + 0x632be59bd9b4e019u;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

struct receiver {
	struct life life;
	tr_ref senders[N_SENDERS]; /* TR_REF_NONE for the threads */
	uint64_t next_seq[N_SENDERS];
	uint64_t received[N_SENDERS];
	bool ended[N_SENDERS];
	uint64_t total, handled;
	uint64_t misordered, wrong_sender, corrupt, after_end, end_mismatch, bad_type;
	char first[200]; /* the first anomaly, for the report */
	tr_test_latch *done;
};

static void note(struct receiver *r, const char *fmt, ...)
{
	va_list ap;

	if (r->first[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->first, sizeof(r->first), fmt, ap);
	va_end(ap);
}

static void on_data(struct receiver *r, const tr_msg *m)
{
	struct data d;
	unsigned i;

	if (tr_msg_size(m) != sizeof(d) || !tr_msg_data(m)) {
		r->corrupt++;
		note(r, "data message of %zu bytes", tr_msg_size(m));
		return;
	}
	memcpy(&d, tr_msg_data(m), sizeof(d));
	i = d.sender;
	if (i >= N_SENDERS || d.check != mix(i, d.seq)) {
		r->corrupt++;
		note(r, "corrupt payload: sender %u seq %" PRIu64, i, d.seq);
		return;
	}
	if (!tr_ref_eq(tr_msg_sender(m), r->senders[i])) {
		r->wrong_sender++;
		note(r, "sender %u: tr_msg_sender %#" PRIx64 ", expected %#" PRIx64,
		     i, tr_msg_sender(m).id, r->senders[i].id);
	}
	if (r->ended[i]) {
		r->after_end++;
		note(r, "sender %u: seq %" PRIu64 " after its end message", i, d.seq);
	}
	/* Strictly +1: a gap is a loss or reorder, a repeat a duplicate. */
	if (d.seq != r->next_seq[i]) {
		r->misordered++;
		note(r, "sender %u: seq %" PRIu64 ", expected %" PRIu64, i, d.seq,
		     r->next_seq[i]);
	}
	r->next_seq[i] = d.seq + 1;
	r->received[i]++;
	r->total++;
}

static void on_end(struct receiver *r, const tr_msg *m)
{
	struct end e;

	if (tr_msg_size(m) != sizeof(e) || !tr_msg_data(m)) {
		r->corrupt++;
		note(r, "end message of %zu bytes", tr_msg_size(m));
		return;
	}
	memcpy(&e, tr_msg_data(m), sizeof(e));
	if (e.sender >= N_SENDERS || r->ended[e.sender]) {
		r->corrupt++;
		note(r, "bad or repeated end message from sender %u", e.sender);
		return;
	}
	r->ended[e.sender] = true;
	/* Per-sender FIFO puts every accepted data message before the end. */
	if (e.count != r->received[e.sender] || e.count != r->next_seq[e.sender]) {
		r->end_mismatch++;
		note(r, "sender %u ended after %" PRIu64 " sent, %" PRIu64
		     " received, next seq %" PRIu64, e.sender, e.count,
		     r->received[e.sender], r->next_seq[e.sender]);
	}
	tr_test_latch_count_down(r->done);
}

static int receiver_fn(void *state, tr_msg *m)
{
	struct receiver *r = state;

	r->handled++;
	switch (tr_msg_type(m)) {
	case MSG_DATA:
		on_data(r, m);
		break;
	case MSG_END:
		on_end(r, m);
		break;
	default:
		r->bad_type++;
		note(r, "unexpected message type %u", tr_msg_type(m));
	}
	return 0;
}

/* One stream; a thread's or an actor's. */
struct sender {
	struct life life;
	unsigned idx;
	tr_ref to;
	uint64_t quota;
	uint64_t next;      /* next sequence number; data accepted so far */
	uint64_t ok;        /* every send accepted (data, end, more) */
	uint64_t failed;
	int first_err;
	bool end_sent, done;
	uint64_t handled, wrong_sender; /* actor senders: their own messages */
	double since;
	tr_test_latch *finished;
};

static void count_send(struct sender *s, int rc)
{
	if (rc == TR_OK) {
		s->ok++;
	} else if (s->failed++ == 0) {
		s->first_err = rc;
	}
}

/* Sends up to n data messages, then the end message once the stream is done
 * or a send was refused (the receiver then expects only what was accepted). */
static void send_chunk(struct sender *s, uint64_t n)
{
	while (n-- > 0 && s->next < s->quota) {
		struct data d = { .sender = s->idx, .seq = s->next,
				  .check = mix(s->idx, s->next) };
		int rc = tr_send(s->to, MSG_DATA, &d, sizeof(d));

		count_send(s, rc);
		if (rc != TR_OK)
			s->quota = s->next;
		else
			s->next++;
	}
	if (s->next == s->quota && !s->end_sent) {
		struct end e = { .sender = s->idx, .count = s->next };
		int rc = tr_send(s->to, MSG_END, &e, sizeof(e));

		count_send(s, rc);
		s->end_sent = rc == TR_OK;
		s->done = true;
	}
}

static atomic_bool give_up; /* set when main's deadline passed */

static void *sender_thread(void *arg)
{
	struct sender *s = arg;

	while (!s->done && !atomic_load(&give_up)) {
		while (stress_must_wait(sys, BACKLOG_MAX, &s->since) && !atomic_load(&give_up))
			sleep_us(200);
		send_chunk(s, CHUNK);
	}
	tr_test_latch_count_down(s->finished);
	return NULL;
}

static int sender_actor(void *state, tr_msg *m)
{
	struct sender *s = state;
	/* The first "more" comes from main, the rest from the actor itself. */
	tr_ref want = s->handled++ ? tr_self() : TR_REF_NONE;
	int rc;

	if (tr_msg_type(m) != MSG_MORE || !tr_ref_eq(tr_msg_sender(m), want))
		s->wrong_sender++;
	if (s->done)
		return 0;
	if (!stress_must_wait(sys, BACKLOG_MAX, &s->since))
		send_chunk(s, CHUNK);
	if (!s->done && !atomic_load(&give_up)) {
		rc = tr_send(tr_self(), MSG_MORE, NULL, 0);
		count_send(s, rc);
		if (rc == TR_OK)
			return 0;
		s->done = true;
	}
	tr_test_latch_count_down(s->finished);
	return 0;
}

static void check_life(struct life *l, const char *who, int want)
{
	unsigned n = atomic_load(&l->cleanups);
	int reason = atomic_load(&l->reason);

	CHECK(n == 1 && reason == want, "%s: cleanup ran %u times, reason %s (want once, %s)",
	      who, n, tr_err_name(reason), tr_err_name(want));
}

int main(int argc, char **argv)
{
	uint64_t scale = parse_scale(argc, argv);
	static struct receiver rcv;
	static struct sender snd[N_SENDERS];
	tr_test_latch finished, received;
	pthread_t th[N_THREADS];
	uint64_t main_ok = 0, ok = 0, lost = 0, handled;
	unsigned started = 0, i;
	tr_ref rref;
	tr_stats st;
	double t0 = tr_test_now();
	bool in_time = false;
	int rc;

	tr_test_latch_init(&finished, N_SENDERS);
	tr_test_latch_init(&received, N_SENDERS);
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;

	/* Spawned before start, so every ref is in place before anyone sends. */
	rcv.done = &received;
	rc = spawn(&rcv, receiver_fn, &rref);
	for (i = 0; i < N_SENDERS && rc == TR_OK; i++) {
		struct sender *s = &snd[i];

		s->idx = i;
		s->to = rref;
		s->quota = scale / N_SENDERS + (i < scale % N_SENDERS);
		s->finished = &finished;
		if (i >= N_THREADS)
			rc = spawn(s, sender_actor, &rcv.senders[i]);
	}
	if (!CHECK(rc == TR_OK, "spawn: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;

	for (i = N_THREADS; i < N_SENDERS; i++) {
		rc = tr_send(rcv.senders[i], MSG_MORE, NULL, 0);
		if (rc == TR_OK)
			main_ok++;
		else
			tr_test_latch_count_down(&finished);
		CHECK(rc == TR_OK, "start actor sender %u: %s", i, tr_err_name(rc));
	}
	for (i = 0; i < N_THREADS; i++) {
		if (pthread_create(&th[i], NULL, sender_thread, &snd[i]) != 0) {
			tr_test_latch_count_down(&finished);
			continue;
		}
		started++;
	}
	CHECK(started == N_THREADS, "started %u of %u sender threads", started, N_THREADS);

	in_time = tr_test_latch_wait(&finished, DEADLINE_S);
	CHECK(in_time, "senders not finished within %d s", DEADLINE_S);
	if (!in_time)
		atomic_store(&give_up, true);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	/* A sender whose end message was refused never tells the receiver. */
	for (i = 0; i < N_SENDERS; i++) {
		if (!snd[i].end_sent)
			tr_test_latch_count_down(&received);
	}
	in_time = in_time && tr_test_latch_wait(&received, DEADLINE_S);
	CHECK(in_time, "receiver did not get every end message within %d s", DEADLINE_S);

shut:
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* Workers are joined: the actors' states are ours to read now. */
	handled = rcv.handled;
	for (i = 0; i < N_SENDERS; i++) {
		struct sender *s = &snd[i];

		ok += s->ok;
		handled += s->handled;
		CHECK(s->failed == 0, "sender %u: %" PRIu64 " sends refused, first %s",
		      i, s->failed, tr_err_name(s->first_err));
		if (rcv.received[i] != s->next || s->next != s->quota)
			lost++;
		CHECK(s->wrong_sender == 0, "sender %u: %" PRIu64
		      " of its own messages had a wrong sender or type", i, s->wrong_sender);
	}
	ok += main_ok;
	CHECK(rcv.misordered == 0 && rcv.corrupt == 0 && rcv.after_end == 0 &&
	      rcv.bad_type == 0, "per-sender FIFO broken: %" PRIu64 " out of sequence, %"
	      PRIu64 " corrupt, %" PRIu64 " after end, %" PRIu64 " bad type; first: %s",
	      rcv.misordered, rcv.corrupt, rcv.after_end, rcv.bad_type, rcv.first);
	CHECK(rcv.wrong_sender == 0, "%" PRIu64 " messages with a wrong tr_msg_sender; first: %s",
	      rcv.wrong_sender, rcv.first);
	CHECK(lost == 0 && rcv.end_mismatch == 0,
	      "%" PRIu64 " streams incomplete, %" PRIu64 " end counts disagree; first: %s",
	      lost, rcv.end_mismatch, rcv.first);
	CHECK_EQ(rcv.total, scale, "data messages received");
	CHECK_EQ(st.sent, ok, "stats.sent vs sends accepted");
	CHECK_EQ(st.delivered, st.sent, "stats.delivered vs stats.sent");
	CHECK_EQ(st.delivered, handled, "stats.delivered vs messages the actors handled");
	CHECK(st.dead_letters == 0 && st.undelivered == 0,
	      "dead letters %" PRIu64 ", undelivered %" PRIu64, st.dead_letters,
	      st.undelivered);
	CHECK(st.spawned == 1 + N_ACTORS && st.stopped == st.spawned && st.alive == 0,
	      "spawned %" PRIu64 ", stopped %" PRIu64 ", alive %" PRIu64, st.spawned,
	      st.stopped, st.alive);
	check_life(&rcv.life, "receiver", TR_ESHUTDOWN);
	for (i = N_THREADS; i < N_SENDERS; i++)
		check_life(&snd[i].life, "actor sender", TR_ESHUTDOWN);
	printf("stress_mailbox: %" PRIu64 " messages from %d senders, %" PRIu64
	       " sends in all, %.2f s\n", rcv.total, N_SENDERS, ok, tr_test_now() - t0);
out:
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&finished);
	tr_test_latch_destroy(&received);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
