#include "rcu.h"

#include <pthread.h>

char tr__rcu_gp_sync;
char tr__rcu_cb_sync;
_Thread_local bool tr__rcu_registered;

static pthread_key_t tr__rcu_key;
static pthread_once_t tr__rcu_once = PTHREAD_ONCE_INIT;

/* Runs at thread exit for every thread that registered: liburcu keeps a
 * pointer to the thread's reader state, which dies with the thread. */
static void tr__rcu_thread_exit(void *arg)
{
	(void)arg;
	urcu_memb_unregister_thread();
	tr__rcu_registered = false;
}

static void tr__rcu_key_init(void) { (void)pthread_key_create(&tr__rcu_key, tr__rcu_thread_exit); }

void tr__rcu_register_slow(void)
{
	if (tr__rcu_registered)
		return;
	pthread_once(&tr__rcu_once, tr__rcu_key_init);
	urcu_memb_register_thread();
	tr__rcu_registered = true;
	(void)pthread_setspecific(tr__rcu_key, &tr__rcu_registered);
}

void tr__rcu_synchronize(void)
{
	tr__rcu_register_slow();
	urcu_memb_synchronize_rcu();
	TR__HB_ACQUIRE(&tr__rcu_gp_sync);
}

void tr__rcu_call(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	tr__rcu_register_slow();
	TR__HB_RELEASE(head);
	urcu_memb_call_rcu(head, fn);
}

void tr__rcu_barrier(void)
{
	tr__rcu_register_slow();
	urcu_memb_barrier();
	TR__HB_ACQUIRE(&tr__rcu_cb_sync);
}
