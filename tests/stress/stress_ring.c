/*
 * stress_ring: tokens travelling round a ring of actors.
 *
 * RING actors each forward tokens to the next one; TOKENS tokens are in
 * flight at once and each makes SCALE / TOKENS hops. Every actor checks that
 * each token it gets was meant for it (start + hops, mod RING) and came from
 * its predecessor. At the end every token must rest where its hop count
 * says, every actor must have seen exactly the tokens that passed it, and
 * the runtime's counters must show every message delivered.
 *
 * Usage: stress_ring SCALE
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

#include "troupe.h"
#include "../support.h"
#include "stress.h"

#define RING 1000u
#define TOKENS 100u
#define MSG_TOKEN 7u
#define DEADLINE_S 120

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

/* ---- the ring ---- */

struct token {
	uint32_t id;
	uint32_t start; /* the node main handed it to */
	uint64_t hops;  /* made so far */
};

struct node {
	atomic_uint cleanups;
	atomic_int reason;
	uint32_t index;
	tr_ref next, prev;
	uint64_t received, forwarded;
	uint64_t misrouted, wrong_sender, bad_msg, send_err;
	int first_err;
};

static struct node nodes[RING];
static uint64_t hops_per_token;
static tr_test_latch tokens_done;

/* Where each token came to rest; written once by the node that holds it. */
static struct {
	atomic_uint finishes;
	atomic_uint where;
} result[TOKENS];

static void node_cleanup(void *state, int reason)
{
	struct node *n = state;

	atomic_store(&n->reason, reason);
	atomic_fetch_add(&n->cleanups, 1);
}

static int node_fn(void *state, tr_msg *m)
{
	struct node *n = state;
	struct token t;
	int rc;

	n->received++;
	if (tr_msg_type(m) != MSG_TOKEN || tr_msg_size(m) != sizeof(t)) {
		n->bad_msg++;
		return 0;
	}
	memcpy(&t, tr_msg_data(m), sizeof(t));
	if (t.id >= TOKENS || t.hops > hops_per_token) {
		n->bad_msg++;
		return 0;
	}
	if ((t.start + t.hops) % RING != n->index)
		n->misrouted++;
	if (!tr_ref_eq(tr_msg_sender(m), t.hops ? n->prev : TR_REF_NONE))
		n->wrong_sender++;
	if (t.hops == hops_per_token) {
		atomic_store(&result[t.id].where, n->index);
		atomic_fetch_add(&result[t.id].finishes, 1);
		tr_test_latch_count_down(&tokens_done);
		return 0;
	}
	t.hops++;
	rc = tr_send(n->next, MSG_TOKEN, &t, sizeof(t));
	if (rc == TR_OK) {
		n->forwarded++;
	} else {
		if (n->send_err++ == 0)
			n->first_err = rc;
		tr_test_latch_count_down(&tokens_done); /* lost: don't wait for it */
	}
	return 0;
}

/* How many times node i sees a token: once per pass, hops + 1 visits from
 * its start node on. */
static void expected_visits(uint64_t *want)
{
	uint64_t visits = hops_per_token + 1, laps = visits / RING;
	uint32_t t, k;

	for (k = 0; k < RING; k++)
		want[k] = laps * TOKENS;
	for (t = 0; t < TOKENS; t++) {
		for (k = 0; k < visits % RING; k++)
			want[(t * (RING / TOKENS) + k) % RING]++;
	}
}

int main(int argc, char **argv)
{
	uint64_t scale = parse_scale(argc, argv);
	static uint64_t want[RING];
	tr_system *sys = NULL;
	tr_ref refs[RING];
	uint64_t received = 0, forwarded = 0, misrouted = 0, wrong_sender = 0;
	uint64_t bad_msg = 0, send_err = 0, main_ok = 0;
	unsigned bad_visits = 0, bad_end = 0, bad_life = 0, i;
	int first_err = 0, rc;
	double t0 = tr_test_now();
	bool in_time = false;
	tr_stats st;

	hops_per_token = scale / TOKENS ? scale / TOKENS : 1;
	tr_test_latch_init(&tokens_done, TOKENS);
	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;

	/* Half the ring is spawned before start and half after, from this
	 * thread, so both paths carry traffic. */
	for (i = 0; i < RING && rc == TR_OK; i++) {
		tr_actor_opts o = { .behaviour = node_fn, .state = &nodes[i],
				    .cleanup = node_cleanup };

		if (i == RING / 2) {
			rc = tr_system_start(sys);
			if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
				goto shut;
		}
		nodes[i].index = i;
		rc = tr_spawn_opts(sys, &o, &refs[i]);
	}
	if (!CHECK(rc == TR_OK, "spawn node %u: %s", i - 1, tr_err_name(rc)))
		goto shut;
	/* The tokens sent below order these writes before any node reads them. */
	for (i = 0; i < RING; i++) {
		nodes[i].next = refs[(i + 1) % RING];
		nodes[i].prev = refs[(i + RING - 1) % RING];
	}
	for (i = 0; i < TOKENS; i++) {
		struct token t = { .id = i, .start = i * (RING / TOKENS) };

		rc = tr_send(refs[t.start], MSG_TOKEN, &t, sizeof(t));
		if (rc == TR_OK) {
			main_ok++;
		} else {
			first_err = first_err ? first_err : rc;
			tr_test_latch_count_down(&tokens_done);
		}
	}
	CHECK(main_ok == TOKENS, "%" PRIu64 " of %u tokens sent, first error %s", main_ok,
	      TOKENS, tr_err_name(first_err));
	first_err = 0;
	in_time = tr_test_latch_wait(&tokens_done, DEADLINE_S);
	CHECK(in_time, "tokens not all home within %d s", DEADLINE_S);

shut:
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* Workers are joined: the nodes are ours to read now. */
	expected_visits(want);
	for (i = 0; i < RING; i++) {
		struct node *n = &nodes[i];

		received += n->received;
		forwarded += n->forwarded;
		misrouted += n->misrouted;
		wrong_sender += n->wrong_sender;
		bad_msg += n->bad_msg;
		send_err += n->send_err;
		first_err = first_err ? first_err : n->first_err;
		if (n->received != want[i] && bad_visits++ == 0)
			fprintf(stderr, "node %u saw %" PRIu64 " tokens, expected %" PRIu64 "\n",
				i, n->received, want[i]);
		if ((atomic_load(&n->cleanups) != 1 ||
		     atomic_load(&n->reason) != TR_ESHUTDOWN) && bad_life++ == 0)
			fprintf(stderr, "node %u: cleanup ran %u times, reason %s\n", i,
				atomic_load(&n->cleanups), tr_err_name(atomic_load(&n->reason)));
	}
	for (i = 0; i < TOKENS; i++) {
		unsigned f = atomic_load(&result[i].finishes), w = atomic_load(&result[i].where);
		unsigned expect = (i * (RING / TOKENS) + hops_per_token) % RING;

		if ((f != 1 || w != expect) && bad_end++ == 0)
			fprintf(stderr, "token %u finished %u times, at node %u, expected once "
				"at node %u\n", i, f, w, expect);
	}

	CHECK(bad_msg == 0 && send_err == 0, "%" PRIu64 " malformed tokens, %" PRIu64
	      " forwards refused (first %s)", bad_msg, send_err, tr_err_name(first_err));
	CHECK(misrouted == 0, "%" PRIu64 " tokens reached the wrong node", misrouted);
	CHECK(wrong_sender == 0, "%" PRIu64 " tokens with a wrong tr_msg_sender", wrong_sender);
	CHECK(bad_end == 0, "%u tokens did not end where expected", bad_end);
	CHECK(bad_visits == 0, "%u nodes saw a wrong number of tokens", bad_visits);
	CHECK_EQ(forwarded, TOKENS * hops_per_token, "hops made");
	CHECK_EQ(received, TOKENS * (hops_per_token + 1), "token visits");
	CHECK_EQ(st.sent, main_ok + forwarded, "stats.sent vs sends accepted");
	CHECK_EQ(st.delivered, received, "stats.delivered vs visits");
	CHECK(st.undelivered == 0 && st.dead_letters == 0,
	      "undelivered %" PRIu64 ", dead letters %" PRIu64, st.undelivered,
	      st.dead_letters);
	CHECK(st.spawned == RING && st.stopped == RING && st.alive == 0,
	      "spawned %" PRIu64 ", stopped %" PRIu64 ", alive %" PRIu64, st.spawned,
	      st.stopped, st.alive);
	CHECK(bad_life == 0, "%u nodes without exactly one TR_ESHUTDOWN cleanup", bad_life);
	printf("stress_ring: %u actors, %u tokens x %" PRIu64 " hops, %.2f s\n", RING, TOKENS,
	       hops_per_token, tr_test_now() - t0);
out:
	tr_system_destroy(&sys);
	tr_test_latch_destroy(&tokens_done);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
