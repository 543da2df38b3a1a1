/* Spawns one actor, sends it a number, and checks the actor saw it. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <troupe.h>

static _Atomic int seen;

static int on_msg(void *state, tr_msg *m)
{
	int v;
	(void)state;
	memcpy(&v, tr_msg_data(m), sizeof(v));
	atomic_store(&seen, v);
	return 0;
}

int main(void)
{
	struct timespec nap = {0, 1000000};
	tr_system *sys;
	tr_ref r;
	int v = 42;

	if (tr_system_new(NULL, &sys) || tr_system_start(sys) || tr_spawn(sys, on_msg, NULL, &r) ||
	    tr_send(r, 1, &v, sizeof(v)))
		return 1;
	for (int i = 0; i < 10000 && atomic_load(&seen) != 42; i++)
		nanosleep(&nap, NULL);
	tr_system_destroy(&sys);
	printf("consumer: %s\n", atomic_load(&seen) == 42 ? "ok" : "FAILED");
	return atomic_load(&seen) == 42 ? 0 : 1;
}
