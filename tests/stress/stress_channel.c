/*
 * stress_channel: publish/subscribe under churn.
 *
 * Two plain threads and two actors publish SCALE sequence-numbered messages
 * in all on four channels ("st.a.x", "st.a.y", "st.b.x", "st.b.y"), each
 * picking a channel at random. Eight subscriber slots each hold a live
 * subscriber actor: some subscribe to channels by name, others by pattern
 * ("st.a.*", "st.#", "#.y", ...), two have small bounded mailboxes (drop or
 * report). Two churn threads keep subscribing, unsubscribing, subscribing
 * again (idempotent) and replacing subscribers: the old one is stopped with
 * tr_stop or told to stop itself, and some subscribers stop on their own
 * after a random number of messages, so publishers keep meeting dead ones.
 *
 * Every message carries (publisher, channel, seq); seqs count per publisher
 * and channel. Each publisher announces a seq as "started" before its
 * tr_publish and "finished" after it, and the churn threads read those
 * around every (un)subscription, which gives each subscription a window:
 *  - allowed (lo, hi]: lo = finished before tr_subscribe was called, hi =
 *    started after tr_unsubscribe returned (unbounded if the actor died
 *    subscribed). A message outside every window of its receiver and
 *    channel was delivered while it was not subscribed;
 *  - required (clo, chi]: clo = started after tr_subscribe returned, chi =
 *    finished before tr_unsubscribe (or the stop) was called. An unbounded
 *    subscriber must get all of it (a prefix if it stopped on its own).
 * An actor's sends are published by the end of its run at the latest
 * (runtime/outbox.h), so an actor publisher announces a seq as finished only
 * when it handles its next message: that comes in a later run.
 * Subscribers record the seqs they get as runs and check order per
 * publisher and channel (strictly increasing: no reordering, no duplicate)
 * and each payload's content; the windows are checked after shutdown.
 *
 * Counters must add up: the deliveries the publishers were told about plus
 * the other sends are the runtime's `sent`; what the actors handled is its
 * `delivered`; drops and refusals are its `rejected_full`.
 *
 * Usage: stress_channel SCALE [SEED]
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
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

enum { N_PUB_THREADS = 2, N_PUB_ACTORS = 2, N_PUBS = N_PUB_THREADS + N_PUB_ACTORS };
enum { N_CH = 4, N_SLOTS = 8, N_CHURN = 2 };
enum { MSG_PUB = 100, MSG_DIE = 1, MSG_MORE = 2 }; /* MSG_PUB + channel */

#define DEADLINE_S 300
#define CHUNK 64             /* publishes an actor publisher makes per message */
#define CHURN_EVERY 64       /* publishes per churn operation, at most */
#define BACKLOG_MAX (16u * 1024u)
#define BOUNDED_CAP 8
#define SELF_REASON 4242
#define DIE_REASON 4343
#define NO_LIMIT UINT64_MAX
#define MAGIC 0x5ca1ab1eu

/* ---- checks ---- */

/* Problems seen off the main thread, reported by main at the end. */
static atomic_uint_fast64_t n_errors;
static atomic_int first_error_line;

static void note_error(int line, const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&n_errors, 1) < 10) {
		int expected = 0;

		atomic_compare_exchange_strong(&first_error_line, &expected, line);
		fprintf(stderr, "%s:%d: error: ", __FILE__, line);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
}

#define ERROR(...) note_error(__LINE__, __VA_ARGS__)

/* ---- topology ---- */

static const char *ch_names[N_CH] = { "st.a.x", "st.a.y", "st.b.x", "st.b.y" };

static const struct {
	const char *pattern;
	uint32_t mask; /* channels it must match */
} patterns[] = {
	{ "st.a.*", 0x3 }, { "st.*.x", 0x5 }, { "st.#", 0xf }, { "#.y", 0xa },
	{ "st.b.#", 0xc }, { "*.*.*", 0xf }, { "st.c.*", 0x0 }, { "#.a.#", 0x3 },
};
#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

static tr_system *sys;
static tr_channel *chans[N_CH];

/* ---- publishers ---- */

/* Last seq of publisher p on channel c whose tr_publish started / returned. */
static _Atomic uint64_t started[N_PUBS][N_CH];
static _Atomic uint64_t finished[N_PUBS][N_CH];
static _Atomic uint64_t published[N_PUBS]; /* for the churn's pace */
static tr_ref pub_refs[N_PUBS];             /* actors; none for threads */

struct hdr {
	uint32_t magic;
	uint16_t pub;
	uint16_t ch;
	uint64_t seq;
	uint32_t size;
	uint32_t check;
};

static uint32_t hdr_check(const struct hdr *h)
{
	uint64_t x = h->seq * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)h->pub << 48) ^
		     ((uint64_t)h->ch << 40) ^ h->size;
	return (uint32_t)(x ^ (x >> 29));
}

static unsigned char tail_byte(const struct hdr *h, size_t i)
{
	return (unsigned char)(h->seq * 31u + i + h->pub * 7u);
}

struct pub {
	unsigned idx;
	uint64_t rng;
	uint64_t quota, done;
	uint64_t seq[N_CH];
	uint64_t delivered, dropped, refused, gone;
	uint64_t efull, bad_rc, efull_mismatch;
	int first_bad_rc;
	uint64_t more_ok, more_handled, bad_more;
	double since;
	unsigned char *buf;
	tr_test_latch *finished;
	bool is_actor;
	uint64_t unannounced[N_CH]; /* actors: finished, announced next message */
};

static atomic_bool give_up;

#define BUF_MAX (sizeof(struct hdr) + 256u * 1024u)

static size_t pick_size(uint64_t r)
{
	size_t size = sizeof(struct hdr) + (r & 63);

	if ((r >> 8) % 4096 == 0)
		size += 8192;
	if ((r >> 20) % 262144 == 0)
		size += 200000;
	return size;
}

static void publish_one(struct pub *p)
{
	uint64_t r = rnd(&p->rng);
	unsigned c = (unsigned)(r >> 40) % N_CH;
	struct hdr h = {
		.magic = MAGIC,
		.pub = (uint16_t)p->idx,
		.ch = (uint16_t)c,
		.seq = ++p->seq[c],
		.size = (uint32_t)pick_size(r),
	};
	tr_pub_result res = { 0, 0, 0, 0 };
	int rc;

	h.check = hdr_check(&h);
	memcpy(p->buf, &h, sizeof(h));
	for (size_t i = sizeof(h); i < h.size; i++)
		p->buf[i] = tail_byte(&h, i);

	atomic_store(&started[p->idx][c], h.seq);
	atomic_thread_fence(memory_order_seq_cst);
	rc = tr_publish(chans[c], MSG_PUB + c, p->buf, h.size, &res);
	if (p->is_actor)
		p->unannounced[c] = h.seq;
	else
		atomic_store(&finished[p->idx][c], h.seq);

	if (rc == TR_EFULL) {
		p->efull++;
	} else if (rc != TR_OK && p->bad_rc++ == 0) {
		p->first_bad_rc = rc;
	}
	if ((rc == TR_EFULL) != (res.refused > 0))
		p->efull_mismatch++;
	p->delivered += res.delivered;
	p->dropped += res.dropped;
	p->refused += res.refused;
	p->gone += res.gone;
	p->done++;
	atomic_store_explicit(&published[p->idx], p->done, memory_order_relaxed);
}

static void *pub_thread(void *arg)
{
	struct pub *p = arg;

	while (p->done < p->quota && !atomic_load(&give_up)) {
		if (p->done % 256 == 0) {
			while (stress_must_wait(sys, BACKLOG_MAX, &p->since) && !atomic_load(&give_up))
				sleep_us(200);
		}
		publish_one(p);
	}
	tr_test_latch_count_down(p->finished);
	return NULL;
}

static int pub_actor(void *state, tr_msg *m)
{
	struct pub *p = state;
	int rc;

	p->more_handled++;
	for (unsigned c = 0; c < N_CH; c++)
		if (p->unannounced[c])
			atomic_store(&finished[p->idx][c], p->unannounced[c]);
	if (tr_msg_type(m) != MSG_MORE)
		p->bad_more++;
	if (!stress_must_wait(sys, BACKLOG_MAX, &p->since)) {
		for (int n = 0; n < CHUNK && p->done < p->quota; n++)
			publish_one(p);
	}
	if (p->done < p->quota && !atomic_load(&give_up)) {
		rc = tr_send(tr_self(), MSG_MORE, NULL, 0);
		if (rc == TR_OK) {
			p->more_ok++;
			return 0;
		}
		ERROR("publisher %u: tr_send to itself: %s", p->idx, tr_err_name(rc));
	}
	tr_test_latch_count_down(p->finished);
	return 0;
}

/* ---- subscribers ---- */

struct run {
	uint64_t a, b;
};

struct runs {
	struct run *v;
	uint32_t n, cap;
};

struct win {
	uint8_t ch;
	uint64_t lo[N_PUBS], hi[N_PUBS];   /* allowed (lo, hi] */
	uint64_t clo[N_PUBS], chi[N_PUBS]; /* required (clo, chi] */
};

struct sub {
	/* set before the actor runs */
	tr_ref ref;
	unsigned id, slot;
	bool bounded, by_pattern;
	uint64_t die_after;

	/* churn side, under the slot's lock */
	uint32_t mask;      /* channels subscribed by name */
	int pat;            /* pattern subscribed, or -1 */
	int32_t open[N_CH]; /* open window per channel, or -1 */
	struct win *wins;
	uint32_t nwins, capwins;

	/* actor side */
	uint64_t last[N_CH][N_PUBS];
	struct runs runs[N_CH][N_PUBS];
	uint64_t received, dies_handled;
	uint64_t bad_payload, bad_order, bad_sender, bad_take, bad_type, oom;
	bool died_self;           /* stopped after die_after messages */
	bool died_by_msg;
	atomic_bool self_stopping; /* set before its tr_stop_self */
	atomic_bool stop_accepted; /* a tr_stop on it returned TR_OK */
	atomic_uint cleanups;
	atomic_int reason;
};

static struct sub **subs;
static uint32_t n_subs_max;
static atomic_uint n_subs;

static struct {
	pthread_mutex_t mu;
	struct sub *cur;
} slots[N_SLOTS];

static bool runs_add(struct runs *r, uint64_t seq)
{
	if (r->n && r->v[r->n - 1].b + 1 == seq) {
		r->v[r->n - 1].b = seq;
		return true;
	}
	if (r->n == r->cap) {
		uint32_t cap = r->cap ? 2 * r->cap : 4;
		struct run *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			return false;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = (struct run){ seq, seq };
	return true;
}

static bool payload_ok(const tr_msg *m, struct hdr *h)
{
	const unsigned char *d = tr_msg_data(m);
	size_t size = tr_msg_size(m);

	if (size < sizeof(*h) || !d)
		return false;
	memcpy(h, d, sizeof(*h));
	if (h->magic != MAGIC || h->size != size || h->check != hdr_check(h) ||
	    h->pub >= N_PUBS || h->ch >= N_CH)
		return false;
	for (size_t i = sizeof(*h); i < size; i++)
		if (d[i] != tail_byte(h, i))
			return false;
	return true;
}

static int sub_beh(void *state, tr_msg *m)
{
	struct sub *s = state;
	uint32_t type = tr_msg_type(m);
	struct hdr h;

	if (type == MSG_DIE) {
		s->dies_handled++;
		if (!s->died_self) {
			s->died_by_msg = true;
			atomic_store(&s->self_stopping, true);
			tr_stop_self(DIE_REASON);
		}
		return 0;
	}
	if (type < MSG_PUB || type >= MSG_PUB + N_CH) {
		s->bad_type++;
		return 0;
	}
	if (!payload_ok(m, &h) || type != (uint32_t)MSG_PUB + h.ch) {
		s->bad_payload++;
		return 0;
	}
	if (tr_msg_take(m) != NULL || tr_msg_ptr(m) != NULL)
		s->bad_take++;
	if (!tr_ref_eq(tr_msg_sender(m), pub_refs[h.pub]))
		s->bad_sender++;
	if (h.seq <= s->last[h.ch][h.pub])
		s->bad_order++;
	else if (!runs_add(&s->runs[h.ch][h.pub], h.seq))
		s->oom++;
	s->last[h.ch][h.pub] = h.seq;
	s->received++;
	if (s->die_after && s->received == s->die_after && !s->died_by_msg) {
		s->died_self = true;
		atomic_store(&s->self_stopping, true);
		tr_stop_self(SELF_REASON);
	}
	return 0;
}

static void sub_cleanup(void *state, int reason)
{
	struct sub *s = state;

	atomic_store(&s->reason, reason);
	atomic_fetch_add(&s->cleanups, 1);
}

/* A new subscriber for `slot`, or NULL once the budget is spent. */
static struct sub *sub_new(unsigned slot, uint64_t *rng)
{
	unsigned id = atomic_fetch_add(&n_subs, 1);
	tr_actor_opts o = { .behaviour = sub_beh, .cleanup = sub_cleanup };
	struct sub *s;
	int rc;

	if (id >= n_subs_max)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		ERROR("out of memory");
		return NULL;
	}
	s->id = id;
	s->slot = slot;
	s->bounded = slot >= N_SLOTS - 2;
	s->by_pattern = slot % 2 == 1 && slot >= 3;
	s->pat = -1;
	for (unsigned c = 0; c < N_CH; c++)
		s->open[c] = -1;
	if (rnd(rng) % 4 == 0)
		s->die_after = 500 + rnd(rng) % 20000;
	o.state = s;
	if (s->bounded) {
		o.mailbox_capacity = BOUNDED_CAP;
		o.overflow = TR_OVERFLOW_REJECT;
	}
	rc = tr_spawn_opts(sys, &o, &s->ref);
	if (rc != TR_OK) {
		ERROR("spawn subscriber: %s", tr_err_name(rc));
		free(s);
		return NULL;
	}
	subs[id] = s;
	return s;
}

/* ---- churn ---- */

struct churn {
	uint64_t rng;
	uint64_t ops, subscribes, resubscribes, unsubscribes, replaces;
	uint64_t stops, dies, edead_sub, enoent_unsub, late_unsub_ok, late_unsub_enoent;
	uint64_t dropped_read;
	uint64_t dead_entries; /* subscriptions their actor stopped with */
};

static atomic_bool churn_stop;

static void read_all(_Atomic uint64_t (*a)[N_CH], unsigned c, uint64_t *out)
{
	for (unsigned p = 0; p < N_PUBS; p++)
		out[p] = atomic_load(&a[p][c]);
}

static struct win *win_push(struct sub *s, unsigned c)
{
	if (s->nwins == s->capwins) {
		uint32_t cap = s->capwins ? 2 * s->capwins : 8;
		struct win *w = realloc(s->wins, cap * sizeof(*w));

		if (!w) {
			ERROR("out of memory");
			return NULL;
		}
		s->wins = w;
		s->capwins = cap;
	}
	memset(&s->wins[s->nwins], 0, sizeof(s->wins[0]));
	s->wins[s->nwins].ch = (uint8_t)c;
	return &s->wins[s->nwins++];
}

/* Channels a subscription covers. */
static uint32_t cover(const struct sub *s, int c_or_pat)
{
	return s->by_pattern ? patterns[c_or_pat].mask : 1u << c_or_pat;
}

static int do_sub(struct sub *s, int what, tr_sub_policy pol)
{
	return s->by_pattern ? tr_subscribe_pattern(sys, patterns[what].pattern, s->ref, pol)
			     : tr_subscribe(chans[what], s->ref, pol);
}

static int do_unsub(struct sub *s, int what)
{
	return s->by_pattern ? tr_unsubscribe_pattern(sys, patterns[what].pattern, s->ref)
			     : tr_unsubscribe(chans[what], s->ref);
}

/* Subscribes `s` to channel or pattern `what`, opening its windows. */
static void subscribe(struct churn *ch, struct sub *s, int what)
{
	uint32_t m = cover(s, what);
	uint64_t lo[N_CH][N_PUBS];
	tr_sub_policy pol = (s->bounded && rnd(&ch->rng) % 2) ? TR_SUB_REPORT : TR_SUB_DROP;
	int rc;

	for (unsigned c = 0; c < N_CH; c++)
		if (m & (1u << c))
			read_all(finished, c, lo[c]);
	rc = do_sub(s, what, pol);
	atomic_thread_fence(memory_order_seq_cst);
	if (rc == TR_EDEAD && atomic_load(&s->self_stopping)) {
		ch->edead_sub++;
		return;
	}
	if (rc != TR_OK) {
		ERROR("subscribe %u to %s: %s", s->id,
		      s->by_pattern ? patterns[what].pattern : ch_names[what], tr_err_name(rc));
		return;
	}
	ch->subscribes++;
	for (unsigned c = 0; c < N_CH; c++) {
		struct win *w;

		if (!(m & (1u << c)))
			continue;
		if (s->open[c] >= 0) {
			ERROR("sub %u: two windows open on %s", s->id, ch_names[c]);
			continue;
		}
		if (!(w = win_push(s, c)))
			continue;
		memcpy(w->lo, lo[c], sizeof(w->lo));
		read_all(started, c, w->clo);
		for (unsigned p = 0; p < N_PUBS; p++)
			w->hi[p] = w->chi[p] = NO_LIMIT;
		s->open[c] = (int32_t)(w - s->wins);
	}
	if (s->by_pattern)
		s->pat = what;
	else
		s->mask |= 1u << what;
}

/* Closes the windows of `cover` mask `m`: chi from before the event, hi
 * (if `after`) read now. */
static void close_windows(struct sub *s, uint32_t m, uint64_t chi[N_CH][N_PUBS], bool after)
{
	for (unsigned c = 0; c < N_CH; c++) {
		struct win *w;

		if (!(m & (1u << c)) || s->open[c] < 0)
			continue;
		w = &s->wins[s->open[c]];
		memcpy(w->chi, chi[c], sizeof(w->chi));
		if (after)
			read_all(started, c, w->hi);
		s->open[c] = -1;
	}
}

static void unsubscribe(struct churn *ch, struct sub *s, int what)
{
	uint32_t m = cover(s, what);
	uint64_t chi[N_CH][N_PUBS];
	int rc;

	if (s->bounded && !s->by_pattern)
		ch->dropped_read += tr_subscription_dropped(chans[what], s->ref);
	for (unsigned c = 0; c < N_CH; c++)
		read_all(finished, c, chi[c]);
	rc = do_unsub(s, what);
	atomic_thread_fence(memory_order_seq_cst);
	if (rc == TR_ENOENT && atomic_load(&s->self_stopping)) {
		ch->enoent_unsub++; /* it stopped and a publish removed it */
	} else if (rc != TR_OK) {
		ERROR("unsubscribe %u from %s: %s", s->id,
		      s->by_pattern ? patterns[what].pattern : ch_names[what], tr_err_name(rc));
	}
	ch->unsubscribes++;
	close_windows(s, m, chi, true);
	if (s->by_pattern)
		s->pat = -1;
	else
		s->mask &= ~(1u << what);
}

/* Replaces the slot's subscriber: the old one stops (or has stopped). */
static void replace(struct churn *ch, unsigned slot)
{
	struct sub *old = slots[slot].cur, *s;
	uint64_t chi[N_CH][N_PUBS];
	int rc;

	s = sub_new(slot, &ch->rng);
	if (!s)
		return; /* budget spent: keep the old one */
	ch->replaces++;
	for (unsigned c = 0; c < N_CH; c++)
		read_all(finished, c, chi[c]);
	if (!atomic_load(&old->self_stopping)) {
		if (!old->bounded && rnd(&ch->rng) % 2) {
			rc = tr_send(old->ref, MSG_DIE, NULL, 0);
			if (rc == TR_OK)
				ch->dies++;
		} else {
			rc = tr_stop(old->ref);
			if (rc == TR_OK) {
				atomic_store(&old->stop_accepted, true);
				ch->stops++;
			}
		}
		if (rc == TR_EDEAD && !atomic_load(&old->self_stopping))
			ERROR("sub %u: TR_EDEAD while alive", old->id);
		else if (rc != TR_OK && rc != TR_EDEAD)
			ERROR("stopping sub %u: %s", old->id, tr_err_name(rc));
	}
	close_windows(old, 0xf, chi, false);
	ch->dead_entries += old->by_pattern ? old->pat >= 0 : __builtin_popcount(old->mask);
	/* its subscriptions go away on their own; removing them by hand
	 * races that and must answer TR_OK or TR_ENOENT */
	if (rnd(&ch->rng) % 3 == 0) {
		for (int w = 0; w < (old->by_pattern ? (int)N_PATTERNS : N_CH); w++) {
			bool had = old->by_pattern ? old->pat == w : (old->mask >> w) & 1;

			if (!had)
				continue;
			rc = do_unsub(old, w);
			if (rc == TR_OK)
				ch->late_unsub_ok++;
			else if (rc == TR_ENOENT)
				ch->late_unsub_enoent++;
			else
				ERROR("unsubscribe of stopped sub %u: %s", old->id,
				      tr_err_name(rc));
		}
	}
	slots[slot].cur = s;
}

static void churn_op(struct churn *ch)
{
	uint64_t r = rnd(&ch->rng);
	unsigned slot = (unsigned)(r % N_SLOTS), k = (unsigned)(r >> 8) % 100;
	struct sub *s;

	pthread_mutex_lock(&slots[slot].mu);
	s = slots[slot].cur;
	if (atomic_load(&s->self_stopping) || k >= 85) {
		replace(ch, slot);
	} else if (s->by_pattern) {
		int q = (int)((r >> 16) % N_PATTERNS);

		if (s->pat < 0) {
			subscribe(ch, s, q);
		} else if (k < 15) {
			/* idempotent: same pattern again, no new window */
			int rc = do_sub(s, s->pat, TR_SUB_DROP);
			if (rc == TR_OK)
				ch->resubscribes++;
			else if (rc != TR_EDEAD || !atomic_load(&s->self_stopping))
				ERROR("resubscribe %u: %s", s->id, tr_err_name(rc));
		} else if (k < 50) {
			unsubscribe(ch, s, s->pat);
		} else {
			unsubscribe(ch, s, s->pat);
			subscribe(ch, s, q);
		}
	} else {
		int c = (int)((r >> 16) % N_CH);

		if (!((s->mask >> c) & 1)) {
			if (k < 55)
				subscribe(ch, s, c);
		} else if (k < 15) {
			int rc = do_sub(s, c, s->bounded ? TR_SUB_REPORT : TR_SUB_DROP);
			if (rc == TR_OK)
				ch->resubscribes++;
			else if (rc != TR_EDEAD || !atomic_load(&s->self_stopping))
				ERROR("resubscribe %u: %s", s->id, tr_err_name(rc));
		} else {
			unsubscribe(ch, s, c);
		}
	}
	pthread_mutex_unlock(&slots[slot].mu);
	ch->ops++;
}

static atomic_uint_fast64_t churn_ops;

static void *churn_thread(void *arg)
{
	struct churn *ch = arg;

	while (!atomic_load(&churn_stop)) {
		uint64_t total = 0;

		for (unsigned p = 0; p < N_PUBS; p++)
			total += atomic_load_explicit(&published[p], memory_order_relaxed);
		if (atomic_load(&churn_ops) * CHURN_EVERY > total) {
			sleep_us(50);
			continue;
		}
		atomic_fetch_add(&churn_ops, 1);
		churn_op(ch);
	}
	return NULL;
}

/* ---- checks after the run ---- */

struct verdict {
	uint64_t outside;     /* runs not inside an allowed window */
	uint64_t missing;     /* required windows not received */
	uint64_t windows;
};

static int cmp_lo(const void *a, const void *b)
{
	const struct run *x = a, *y = b;
	return x->a < y->a ? -1 : x->a > y->a;
}

/* Every run of seqs (publisher p, channel c) lies inside one allowed window. */
static void check_allowed(const struct sub *s, unsigned c, unsigned p, struct run *allowed,
			  struct verdict *v)
{
	const struct runs *rs = &s->runs[c][p];
	uint32_t na = 0, merged = 0;

	/* allowed seqs: the union of [lo+1, hi] */
	for (uint32_t i = 0; i < s->nwins; i++) {
		const struct win *w = &s->wins[i];

		if (w->ch == c && w->lo[p] < w->hi[p])
			allowed[na++] = (struct run){ w->lo[p] + 1, w->hi[p] };
	}
	qsort(allowed, na, sizeof(*allowed), cmp_lo);
	for (uint32_t i = 0; i < na; i++) {
		struct run *last = merged ? &allowed[merged - 1] : NULL;

		if (last && (last->b == NO_LIMIT || allowed[i].a <= last->b + 1)) {
			if (allowed[i].b > last->b)
				last->b = allowed[i].b;
		} else {
			allowed[merged++] = allowed[i];
		}
	}
	for (uint32_t i = 0, j = 0; i < rs->n; i++) {
		const struct run *r = &rs->v[i];

		while (j < merged && allowed[j].b < r->a)
			j++;
		if (j < merged && allowed[j].a <= r->a && allowed[j].b >= r->b)
			continue;
		if (v->outside++ < 5)
			fprintf(stderr, "sub %u (%s%s): got %s seqs %" PRIu64 "..%" PRIu64
				" of publisher %u outside its subscriptions (%u windows)\n",
				s->id, s->by_pattern ? "pattern" : "exact",
				s->bounded ? ", bounded" : "", ch_names[c], r->a, r->b, p, merged);
	}
}

/* An unbounded subscriber got all of each required window (clo, chi], or a
 * prefix of it if it stopped on its own. */
static void check_required(const struct sub *s, unsigned c, unsigned p, struct verdict *v)
{
	const struct runs *rs = &s->runs[c][p];

	for (uint32_t i = 0; i < s->nwins; i++) {
		const struct win *w = &s->wins[i];
		uint64_t a = w->clo[p] + 1, b = w->chi[p];
		uint32_t hits = 0, first = 0;
		bool ok;

		if (w->ch != c)
			continue;
		v->windows++;
		if (a > b)
			continue;
		for (uint32_t k = 0; k < rs->n; k++) {
			if (rs->v[k].b < a || rs->v[k].a > b)
				continue;
			if (hits++ == 0)
				first = k;
		}
		if (s->died_self)
			ok = hits == 0 || (hits == 1 && rs->v[first].a <= a);
		else
			ok = hits == 1 && rs->v[first].a <= a && rs->v[first].b >= b;
		if (!ok && v->missing++ < 5)
			fprintf(stderr, "sub %u: missed some of %s seqs %" PRIu64 "..%" PRIu64
				" of publisher %u (%u runs there%s)\n", s->id, ch_names[c], a, b,
				p, hits, s->died_self ? ", stopped itself" : "");
	}
}

static void check_sub(const struct sub *s, struct verdict *v)
{
	struct run *allowed = malloc((s->nwins + 1) * sizeof(*allowed));

	if (!allowed) {
		v->outside++;
		return;
	}
	for (unsigned c = 0; c < N_CH; c++) {
		for (unsigned p = 0; p < N_PUBS; p++) {
			check_allowed(s, c, p, allowed, v);
			if (!s->bounded)
				check_required(s, c, p, v);
		}
	}
	free(allowed);
}

static int expected_reason(const struct sub *s)
{
	if (s->died_self)
		return SELF_REASON;
	if (s->died_by_msg)
		return DIE_REASON;
	return atomic_load(&s->stop_accepted) ? TR_OK : TR_ESHUTDOWN;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	uint64_t scale = argc > 1 ? parse_u64(argv[1], argv[0]) : 2000000;
	uint64_t seed = argc > 2 ? parse_u64(argv[2], argv[0]) : 0xc4a77e1;
	static struct pub pubs[N_PUBS];
	static struct churn churns[N_CHURN];
	struct pub tot = { .idx = 0 };
	struct churn ctot = { .rng = 0 };
	struct verdict v = { 0, 0, 0 };
	tr_test_latch finished_latch;
	pthread_t pth[N_PUB_THREADS], cth[N_CHURN];
	unsigned pstarted = 0, cstarted = 0, i;
	uint64_t received = 0, dies_handled = 0, bad_payload = 0, bad_order = 0, bad_sender = 0;
	uint64_t bad_take = 0, bad_type = 0, oom = 0, bad_cleanup = 0, self_died = 0, spawned;
	uint64_t main_more_ok = 0, setup_rng = seed;
	double t0 = tr_test_now();
	bool in_time = false;
	tr_stats st;
	int rc = TR_OK;

	printf("stress_channel: scale %" PRIu64 ", seed %#" PRIx64 "\n", scale, seed);
	n_subs_max = N_SLOTS + (uint32_t)(scale / CHURN_EVERY) + 16;
	subs = calloc(n_subs_max, sizeof(*subs));
	tr_test_latch_init(&finished_latch, N_PUBS);
	for (i = 0; i < N_SLOTS; i++)
		pthread_mutex_init(&slots[i].mu, NULL);
	if (!CHECK(subs != NULL, "out of memory"))
		goto out;

	/* the matcher agrees with the table the checks rely on */
	for (i = 0; i < N_PATTERNS; i++) {
		uint32_t m = 0;

		for (unsigned c = 0; c < N_CH; c++)
			m |= (uint32_t)tr_topic_match(patterns[i].pattern, ch_names[c]) << c;
		CHECK(m == patterns[i].mask, "pattern %s matches %#x, expected %#x",
		      patterns[i].pattern, m, patterns[i].mask);
	}

	rc = tr_system_new(NULL, &sys);
	if (!CHECK(rc == TR_OK, "tr_system_new: %s", tr_err_name(rc)))
		goto out;
	for (i = 0; i < N_CH && rc == TR_OK; i++)
		rc = tr_channel_open(sys, ch_names[i], &chans[i]);
	for (i = 0; i < N_SLOTS && rc == TR_OK; i++) {
		slots[i].cur = sub_new(i, &setup_rng);
		if (!slots[i].cur)
			rc = TR_ENOMEM;
	}
	for (i = 0; i < N_PUBS && rc == TR_OK; i++) {
		struct pub *p = &pubs[i];

		p->idx = i;
		p->rng = seed ^ (0x9e3779b97f4a7c15ULL * (i + 1));
		p->quota = scale / N_PUBS + (i < scale % N_PUBS);
		p->finished = &finished_latch;
		p->buf = malloc(BUF_MAX);
		if (!p->buf)
			rc = TR_ENOMEM;
		else if (i >= N_PUB_THREADS) {
			p->is_actor = true;
			rc = tr_spawn(sys, pub_actor, p, &pub_refs[i]);
		}
	}
	for (i = 0; i < N_CHURN; i++)
		churns[i].rng = seed ^ (0xbf58476d1ce4e5b9ULL * (i + 11));
	if (!CHECK(rc == TR_OK, "setup: %s", tr_err_name(rc)))
		goto shut;
	rc = tr_system_start(sys);
	if (!CHECK(rc == TR_OK, "tr_system_start: %s", tr_err_name(rc)))
		goto shut;

	/* a first subscription for every slot, then everyone starts */
	for (i = 0; i < N_SLOTS; i++) {
		pthread_mutex_lock(&slots[i].mu);
		struct sub *s = slots[i].cur;

		subscribe(&churns[0], s, (int)(i % (s->by_pattern ? N_PATTERNS : N_CH)));
		pthread_mutex_unlock(&slots[i].mu);
	}
	for (i = 0; i < N_CHURN; i++) {
		if (pthread_create(&cth[i], NULL, churn_thread, &churns[i]) == 0)
			cstarted++;
	}
	CHECK(cstarted == N_CHURN, "started %u of %u churn threads", cstarted, N_CHURN);
	for (i = N_PUB_THREADS; i < N_PUBS; i++) {
		rc = tr_send(pub_refs[i], MSG_MORE, NULL, 0);
		if (rc == TR_OK)
			main_more_ok++;
		else
			tr_test_latch_count_down(&finished_latch);
		CHECK(rc == TR_OK, "start publisher actor %u: %s", i, tr_err_name(rc));
	}
	for (i = 0; i < N_PUB_THREADS; i++) {
		if (pthread_create(&pth[i], NULL, pub_thread, &pubs[i]) != 0) {
			tr_test_latch_count_down(&finished_latch);
			continue;
		}
		pstarted++;
	}
	CHECK(pstarted == N_PUB_THREADS, "started %u of %u publisher threads", pstarted,
	      N_PUB_THREADS);

	in_time = tr_test_latch_wait(&finished_latch, DEADLINE_S);
	CHECK(in_time, "publishers not finished within %d s", DEADLINE_S);
	if (!in_time)
		atomic_store(&give_up, true);
	for (i = 0; i < pstarted; i++)
		pthread_join(pth[i], NULL);
	atomic_store(&churn_stop, true);
	for (i = 0; i < cstarted; i++)
		pthread_join(cth[i], NULL);

	/* every publish returned: close the windows still open */
	for (i = 0; i < N_SLOTS; i++) {
		struct sub *s = slots[i].cur;
		uint64_t chi[N_CH][N_PUBS];

		for (unsigned c = 0; c < N_CH; c++)
			read_all(finished, c, chi[c]);
		close_windows(s, 0xf, chi, false);
		if (atomic_load(&s->self_stopping))
			churns[0].dead_entries += s->by_pattern ? s->pat >= 0
							       : __builtin_popcount(s->mask);
	}

shut:
	/* graceful: whatever the subscribers accepted, they handle */
	rc = tr_system_shutdown(sys, in_time ? TR_SHUTDOWN_GRACEFUL : TR_SHUTDOWN_IMMEDIATE);
	CHECK(rc == TR_OK, "tr_system_shutdown: %s", tr_err_name(rc));
	rc = tr_system_stats(sys, &st);
	CHECK(rc == TR_OK, "tr_system_stats: %s", tr_err_name(rc));

	/* workers are joined: every state is ours to read */
	for (i = 0; i < N_PUBS; i++) {
		struct pub *p = &pubs[i];

		tot.done += p->done;
		tot.delivered += p->delivered;
		tot.dropped += p->dropped;
		tot.refused += p->refused;
		tot.gone += p->gone;
		tot.efull += p->efull;
		tot.bad_rc += p->bad_rc;
		tot.first_bad_rc = tot.first_bad_rc ? tot.first_bad_rc : p->first_bad_rc;
		tot.efull_mismatch += p->efull_mismatch;
		tot.more_ok += p->more_ok;
		tot.more_handled += p->more_handled;
		tot.bad_more += p->bad_more;
	}
	tot.more_ok += main_more_ok;
	for (i = 0; i < N_CHURN; i++) {
		struct churn *c = &churns[i];

		ctot.ops += c->ops;
		ctot.subscribes += c->subscribes;
		ctot.resubscribes += c->resubscribes;
		ctot.unsubscribes += c->unsubscribes;
		ctot.replaces += c->replaces;
		ctot.stops += c->stops;
		ctot.dies += c->dies;
		ctot.edead_sub += c->edead_sub;
		ctot.enoent_unsub += c->enoent_unsub;
		ctot.late_unsub_ok += c->late_unsub_ok;
		ctot.late_unsub_enoent += c->late_unsub_enoent;
		ctot.dropped_read += c->dropped_read;
		ctot.dead_entries += c->dead_entries;
	}
	spawned = atomic_load(&n_subs);
	if (spawned > n_subs_max)
		spawned = n_subs_max;
	for (uint32_t k = 0; k < spawned; k++) {
		struct sub *s = subs[k];
		unsigned n;
		int want, got;

		if (!s)
			continue;
		received += s->received;
		dies_handled += s->dies_handled;
		bad_payload += s->bad_payload;
		bad_order += s->bad_order;
		bad_sender += s->bad_sender;
		bad_take += s->bad_take;
		bad_type += s->bad_type;
		oom += s->oom;
		self_died += s->died_self;
		n = atomic_load(&s->cleanups);
		want = expected_reason(s);
		got = atomic_load(&s->reason);
		if (n != 1 || got != want) {
			if (bad_cleanup++ < 5)
				fprintf(stderr, "sub %u: cleanup ran %u times, reason %d (%s), "
					"expected once with %d (%s)\n", s->id, n, got,
					tr_err_name(got), want, tr_err_name(want));
		}
		if (in_time)
			check_sub(s, &v);
	}

	CHECK(atomic_load(&n_errors) == 0, "%" PRIu64 " errors in publishers, subscribers or "
	      "churn (first at line %d)", (uint64_t)atomic_load(&n_errors),
	      atomic_load(&first_error_line));
	CHECK_EQ(tot.done, scale, "publishes made");
	CHECK(tot.bad_rc == 0, "%" PRIu64 " publishes failed, first with %s", tot.bad_rc,
	      tr_err_name(tot.first_bad_rc));
	CHECK(tot.efull_mismatch == 0, "%" PRIu64 " publishes: TR_EFULL disagrees with "
	      "res.refused", tot.efull_mismatch);
	CHECK(tot.bad_more == 0, "%" PRIu64 " wrong messages to publisher actors", tot.bad_more);
	CHECK(bad_payload == 0, "%" PRIu64 " damaged payloads", bad_payload);
	CHECK(bad_type == 0, "%" PRIu64 " messages of an unexpected type", bad_type);
	CHECK(bad_take == 0, "%" PRIu64 " shared payloads handed out by tr_msg_take/ptr",
	      bad_take);
	CHECK(bad_sender == 0, "%" PRIu64 " messages with a wrong sender", bad_sender);
	CHECK(bad_order == 0, "%" PRIu64 " messages out of order or twice", bad_order);
	CHECK(oom == 0, "%" PRIu64 " runs not recorded (out of memory)", oom);
	CHECK(v.outside == 0, "%" PRIu64 " runs of messages outside the receiver's "
	      "subscriptions", v.outside);
	CHECK(v.missing == 0, "%" PRIu64 " subscription windows with messages missing",
	      v.missing);
	CHECK(bad_cleanup == 0, "%" PRIu64 " subscribers with a wrong cleanup count or reason",
	      bad_cleanup);
	CHECK(ctot.replaces > 0 && ctot.unsubscribes > 0 && tot.gone > 0,
	      "churn did not bite: %" PRIu64 " replacements, %" PRIu64 " unsubscribes, %" PRIu64
	      " gone", ctot.replaces, ctot.unsubscribes, tot.gone);
	/* a publisher that finds a subscriber gone removes it before it
	 * returns, so each publisher reports each dead subscription once */
	CHECK(tot.gone <= (uint64_t)N_PUBS * ctot.dead_entries, "%" PRIu64 " subscribers "
	      "reported gone, more than %u per subscription a stopped actor left (%" PRIu64 ")",
	      tot.gone, N_PUBS, ctot.dead_entries);
	CHECK_EQ(st.sent, tot.delivered + ctot.dies + tot.more_ok,
		 "stats.sent vs deliveries reported by tr_publish + other sends");
	CHECK_EQ(st.delivered, received + dies_handled + tot.more_handled,
		 "stats.delivered vs messages the actors handled");
	CHECK_EQ(st.sent, st.delivered + st.undelivered,
		 "stats.sent vs stats.delivered + stats.undelivered");
	CHECK_EQ(st.rejected_full, tot.dropped + tot.refused,
		 "stats.rejected_full vs dropped + refused");
	CHECK(ctot.dropped_read <= tot.dropped, "tr_subscription_dropped summed to %" PRIu64
	      ", more than the %" PRIu64 " drops", ctot.dropped_read, tot.dropped);
	CHECK(st.spawned == spawned + N_PUB_ACTORS && st.stopped == st.spawned && st.alive == 0,
	      "spawned %" PRIu64 " (want %" PRIu64 "), stopped %" PRIu64 ", alive %" PRIu64,
	      st.spawned, spawned + N_PUB_ACTORS, st.stopped, st.alive);

	printf("stress_channel: %" PRIu64 " publishes, %" PRIu64 " deliveries (%" PRIu64
	       " handled, %" PRIu64 " undelivered), %" PRIu64 " dropped, %" PRIu64 " refused, %"
	       PRIu64 " gone\n", tot.done, tot.delivered, received,
	       tot.delivered > received ? tot.delivered - received : 0, tot.dropped, tot.refused,
	       tot.gone);
	printf("stress_channel: churn %" PRIu64 " ops: %" PRIu64 " subscribes, %" PRIu64
	       " again, %" PRIu64 " unsubscribes (%" PRIu64 " already gone), %" PRIu64
	       " replacements (%" PRIu64 " tr_stop, %" PRIu64 " told to stop, %" PRIu64
	       " stopped themselves; %" PRIu64 "/%" PRIu64 " of their subscriptions removed "
	       "by hand/already gone), %" PRIu64 " subscribe to a stopped one\n", ctot.ops,
	       ctot.subscribes, ctot.resubscribes, ctot.unsubscribes, ctot.enoent_unsub,
	       ctot.replaces, ctot.stops, ctot.dies, self_died, ctot.late_unsub_ok,
	       ctot.late_unsub_enoent, ctot.edead_sub);
	printf("stress_channel: %" PRIu64 " subscription windows checked, %.2f s\n", v.windows,
	       tr_test_now() - t0);
out:
	tr_system_destroy(&sys);
	for (uint32_t k = 0; subs && k < n_subs_max; k++) {
		struct sub *s = subs[k];

		if (!s)
			continue;
		for (unsigned c = 0; c < N_CH; c++)
			for (unsigned p = 0; p < N_PUBS; p++)
				free(s->runs[c][p].v);
		free(s->wins);
		free(s);
	}
	free(subs);
	for (i = 0; i < N_PUBS; i++)
		free(pubs[i].buf);
	for (i = 0; i < N_SLOTS; i++)
		pthread_mutex_destroy(&slots[i].mu);
	tr_test_latch_destroy(&finished_latch);
	printf("%u passed, %u failed\n", n_passed, n_failed);
	return n_failed ? 1 : 0;
}
