/* The README's example: two actors exchange messages, then shut down. */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <troupe.h>

enum { PING = 1, PONG = 2 };
static atomic_bool done;

static int pong(void *state, tr_msg *m) /* echo to whoever sent it */
{
	(void)state;
	return tr_send(tr_msg_sender(m), PONG, tr_msg_data(m), tr_msg_size(m));
}

static int ping(void *state, tr_msg *m) /* state: pong's reference */
{
	int n = *(const int *)tr_msg_data(m);
	printf("ping: round %d\n", n);
	if (n == 3) {
		atomic_store(&done, true);
		return tr_stop_self(TR_OK);
	}
	n++;
	return tr_send(*(tr_ref *)state, PING, &n, sizeof(n));
}

int main(void)
{
	tr_system *sys;
	tr_ref p, q;
	int zero = 0;

	tr_system_new(NULL, &sys); /* one worker per CPU */
	tr_system_start(sys);
	tr_spawn(sys, pong, NULL, &q);
	tr_spawn(sys, ping, &q, &p);
	tr_send(p, PONG, &zero, sizeof(zero)); /* kick off from main */
	while (!atomic_load(&done))
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	tr_system_destroy(&sys); /* graceful: delivers what was accepted */
	return 0;
}
