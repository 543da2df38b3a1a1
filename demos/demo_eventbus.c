/*
 * demo_eventbus: a chat room on publish/subscribe channels.
 *
 * Three users (actors with a periodic timer) post to "room.general" and
 * "room.random"; a plain thread posts load alerts to "sys.alert". Members
 * subscribe by name ("room.general") or by pattern ("room.*", "sys.#",
 * "#"), and join, leave and drop out while the chat goes on, following the
 * timeline below. One publish reaches every current member with a single
 * shared copy of the payload; a member that stops is removed from the
 * channels by the next publish that finds it gone.
 *
 * At the end it prints who received what, what the publishers were told
 * (deliveries, members found gone), and checks that the counts add up.
 * Runs for about three seconds.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <troupe.h>

enum msg_type {
	MSG_TICK = 1, /* a user's timer: time to post */
	MSG_CHAT,     /* struct post, published on a channel */
	MSG_ALERT,    /* struct post, published on sys.alert */
};

enum { TOPIC_GENERAL, TOPIC_RANDOM, TOPIC_ALERT, N_TOPICS };
static const char *topic_names[N_TOPICS] = { "room.general", "room.random", "sys.alert" };
static tr_channel *topics[N_TOPICS];

/* What travels on the bus: copied once per publish, shared by all readers. */
struct post {
	uint8_t topic;
	char from[12];
	uint32_t n;
	char text[80];
};

static tr_system *sys;
static double t_start;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double elapsed(void) { return now_s() - t_start; }

static void sleep_until(double t)
{
	double d = t - elapsed();

	if (d > 0) {
		struct timespec ts = { (time_t)d, (long)((d - (double)(time_t)d) * 1e9) };
		nanosleep(&ts, NULL);
	}
}

/* ---- publishers: users and the alert thread ---- */

struct pub_tally {
	uint64_t posts, delivered, gone, failed;
};

static void tally(struct pub_tally *t, int rc, const tr_pub_result *res)
{
	t->posts++;
	if (rc != TR_OK) {
		t->failed++;
		return;
	}
	t->delivered += res->delivered;
	t->gone += res->gone;
}

struct user {
	const char *name;
	uint64_t period_ms;
	const char *lines[4];
	tr_ref ref;
	struct pub_tally tally;
};

static struct user users[] = {
	{ .name = "alice", .period_ms = 40,
	  .lines = { "hi all", "anyone tried the new build?", "lunch?", "brb" } },
	{ .name = "bob", .period_ms = 55,
	  .lines = { "hey alice", "works for me", "+1", "look at this cat" } },
	{ .name = "carol", .period_ms = 70,
	  .lines = { "morning", "the tests are green", "who broke main?", "ok fixed" } },
};
#define N_USERS (sizeof(users) / sizeof(users[0]))

static int user_beh(void *state, tr_msg *m)
{
	struct user *u = state;
	struct post p = { 0 };
	tr_pub_result res;
	int rc;

	if (tr_msg_type(m) != MSG_TICK)
		return 0;
	/* mostly general, every third post to random */
	p.topic = u->tally.posts % 3 == 2 ? TOPIC_RANDOM : TOPIC_GENERAL;
	snprintf(p.from, sizeof(p.from), "%s", u->name);
	p.n = (uint32_t)u->tally.posts + 1;
	snprintf(p.text, sizeof(p.text), "%s", u->lines[u->tally.posts % 4]);
	rc = tr_publish(topics[p.topic], MSG_CHAT, &p, sizeof(p), &res);
	tally(&u->tally, rc, &res);
	return 0;
}

static struct pub_tally alert_tally;
static atomic_bool alerts_stop;

static void *alert_thread(void *arg)
{
	unsigned n = 0;

	(void)arg;
	while (!atomic_load(&alerts_stop)) {
		struct post p = { .topic = TOPIC_ALERT, .n = ++n };
		tr_pub_result res;
		int rc;

		snprintf(p.from, sizeof(p.from), "monitor");
		snprintf(p.text, sizeof(p.text), "load %u%%", 40 + (n * 37) % 60);
		rc = tr_publish(topics[TOPIC_ALERT], MSG_ALERT, &p, sizeof(p), &res);
		tally(&alert_tally, rc, &res);
		nanosleep(&(struct timespec){ 0, 250000000 }, NULL);
	}
	return NULL;
}

/* ---- members: subscribers that count what they get ---- */

struct member {
	const char *name;
	const char *how;   /* subscriptions, for the summary */
	unsigned echo;     /* print the first `echo` messages as they arrive */
	tr_ref ref;
	uint64_t got[N_TOPICS];
	uint64_t total;
	char first[N_TOPICS][120];
	bool stopped;
};

static struct member members[] = {
	{ .name = "logger", .how = "#" },
	{ .name = "ops", .how = "sys.#", .echo = 1000 },
	{ .name = "erin", .how = "room.general (leaves 1.5s, back 2.5s)" },
	{ .name = "dave", .how = "room.* (0.5s .. 2.0s)", .echo = 4 },
	{ .name = "frank", .how = "room.*, sys.alert (1.0s, stops 2.2s)" },
};
enum { LOGGER, OPS, ERIN, DAVE, FRANK, N_MEMBERS };

static int member_beh(void *state, tr_msg *m)
{
	struct member *mb = state;
	struct post p;

	if (tr_msg_size(m) != sizeof(p))
		return 0;
	memcpy(&p, tr_msg_data(m), sizeof(p)); /* read-only shared payload */
	if (p.topic >= N_TOPICS)
		return 0;
	if (!mb->got[p.topic]++)
		snprintf(mb->first[p.topic], sizeof(mb->first[0]), "%s #%" PRIu32 ": %s", p.from,
			 p.n, p.text);
	mb->total++;
	if (mb->total <= mb->echo)
		printf("  [%4.2fs] %-6s <- %-12s %s: %s\n", elapsed(), mb->name,
		       topic_names[p.topic], p.from, p.text);
	return 0;
}

static void member_cleanup(void *state, int reason)
{
	struct member *mb = state;

	mb->stopped = true;
	if (reason == TR_OK)
		printf("  [%4.2fs] %s has stopped; the next publishes find it gone\n", elapsed(),
		       mb->name);
}

/* ---- the timeline ---- */

static void say(const char *fmt, const char *who, const char *what)
{
	printf("[%4.2fs] ", elapsed());
	printf(fmt, who, what);
	putchar('\n');
}

static int join_pattern(int who, const char *pattern)
{
	int rc = tr_subscribe_pattern(sys, pattern, members[who].ref, TR_SUB_DROP);

	say("%s joins %s", members[who].name, pattern);
	return rc;
}

static int leave_pattern(int who, const char *pattern)
{
	int rc = tr_unsubscribe_pattern(sys, pattern, members[who].ref);

	say("%s leaves %s", members[who].name, pattern);
	return rc;
}

static int join(int who, int topic)
{
	int rc = tr_subscribe(topics[topic], members[who].ref, TR_SUB_DROP);

	say("%s joins %s", members[who].name, topic_names[topic]);
	return rc;
}

static int leave(int who, int topic)
{
	int rc = tr_unsubscribe(topics[topic], members[who].ref);

	say("%s leaves %s", members[who].name, topic_names[topic]);
	return rc;
}

static int check(int rc, const char *what)
{
	if (rc != TR_OK)
		fprintf(stderr, "demo_eventbus: %s: %s\n", what, tr_strerror(rc));
	return rc != TR_OK;
}

int main(void)
{
	pthread_t alerts;
	bool alerts_started = false;
	uint64_t delivered = 0, gone = 0, received = 0;
	unsigned bad = 0;
	tr_stats st;

	bad += check(tr_system_new(NULL, &sys), "tr_system_new");
	if (bad)
		return 1;
	for (int t = 0; t < N_TOPICS; t++)
		bad += check(tr_channel_open(sys, topic_names[t], &topics[t]), "tr_channel_open");
	for (int i = 0; i < N_MEMBERS; i++) {
		tr_actor_opts o = { .behaviour = member_beh, .state = &members[i],
				    .cleanup = member_cleanup };
		bad += check(tr_spawn_opts(sys, &o, &members[i].ref), "spawn member");
	}
	for (unsigned i = 0; i < N_USERS; i++)
		bad += check(tr_spawn(sys, user_beh, &users[i], &users[i].ref), "spawn user");
	bad += check(tr_system_start(sys), "tr_system_start");
	if (bad)
		goto out;
	t_start = now_s();

	printf("demo_eventbus: %u users chat on room.general and room.random, "
	       "a monitor posts to sys.alert\n", (unsigned)N_USERS);
	bad += check(join_pattern(LOGGER, "#"), "logger");
	bad += check(join_pattern(OPS, "sys.#"), "ops");
	bad += check(join(ERIN, TOPIC_GENERAL), "erin");
	for (unsigned i = 0; i < N_USERS; i++)
		bad += check(tr_send_every(users[i].ref, users[i].period_ms * 1000000u, MSG_TICK,
					   NULL, 0, NULL), "tr_send_every");
	alerts_started = pthread_create(&alerts, NULL, alert_thread, NULL) == 0;
	bad += !alerts_started;

	sleep_until(0.5);
	bad += check(join_pattern(DAVE, "room.*"), "dave");
	sleep_until(1.0);
	bad += check(join_pattern(FRANK, "room.*"), "frank");
	bad += check(join(FRANK, TOPIC_ALERT), "frank");
	sleep_until(1.5);
	bad += check(leave(ERIN, TOPIC_GENERAL), "erin");
	sleep_until(2.0);
	bad += check(leave_pattern(DAVE, "room.*"), "dave");
	sleep_until(2.2);
	say("%s %s", "frank", "drops out (tr_stop) without unsubscribing");
	bad += check(tr_stop(members[FRANK].ref), "tr_stop");
	sleep_until(2.5);
	bad += check(join(ERIN, TOPIC_GENERAL), "erin");
	sleep_until(3.0);
	say("%s %s", "chat", "closes");

	/* users stop (their timers go with them), then the alert thread */
	for (unsigned i = 0; i < N_USERS; i++)
		bad += check(tr_stop(users[i].ref), "tr_stop user");
	atomic_store(&alerts_stop, true);
	if (alerts_started)
		pthread_join(alerts, NULL);

out:
	/* graceful: every accepted message is handled first */
	bad += check(tr_system_shutdown(sys, TR_SHUTDOWN_GRACEFUL), "tr_system_shutdown");
	tr_system_stats(sys, &st);

	/* workers are joined: the actors' states are ours to read */
	printf("\n%-8s %-40s %12s %12s %10s %6s\n", "member", "subscribed to", topic_names[0],
	       topic_names[1], topic_names[2], "total");
	for (int i = 0; i < N_MEMBERS; i++) {
		struct member *mb = &members[i];

		printf("%-8s %-40s %12" PRIu64 " %12" PRIu64 " %10" PRIu64 " %6" PRIu64 "\n",
		       mb->name, mb->how, mb->got[0], mb->got[1], mb->got[2], mb->total);
		received += mb->total;
	}
	printf("\nfirst posts the logger saw:\n");
	for (int t = 0; t < N_TOPICS; t++)
		printf("  %-12s %s\n", topic_names[t], members[LOGGER].first[t]);

	printf("\npublishers:\n");
	for (unsigned i = 0; i < N_USERS; i++) {
		struct pub_tally *t = &users[i].tally;

		printf("  %-8s %3" PRIu64 " posts reached %4" PRIu64 " members, found %" PRIu64
		       " gone\n", users[i].name, t->posts, t->delivered, t->gone);
		delivered += t->delivered;
		gone += t->gone;
		bad += t->failed != 0;
	}
	printf("  %-8s %3" PRIu64 " posts reached %4" PRIu64 " members, found %" PRIu64 " gone\n",
	       "monitor", alert_tally.posts, alert_tally.delivered, alert_tally.gone);
	delivered += alert_tally.delivered;
	gone += alert_tally.gone;
	bad += alert_tally.failed != 0;

	/* every delivery was handled, except those queued behind frank's stop */
	printf("\n%" PRIu64 " deliveries, %" PRIu64 " handled, %" PRIu64 " undelivered "
	       "(queued behind a stop); %" PRIu64 " times a publisher found frank gone\n",
	       delivered, received, st.undelivered, gone);
	if (delivered != received + st.undelivered || !members[FRANK].stopped ||
	    members[LOGGER].total == 0) {
		fprintf(stderr, "demo_eventbus: the counts do not add up\n");
		bad++;
	}
	tr_system_destroy(&sys);
	return bad ? 1 : 0;
}
