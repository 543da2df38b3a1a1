/*
 * troupe: error codes.
 *
 * Every troupe function that can fail returns 0 (TR_OK) on success or one of
 * the negative TR_E* codes below. Where a POSIX errno has the same meaning the
 * code is its negation (libuv style); codes without a POSIX twin live at -4000
 * and below. No troupe function reports errors through errno.
 */
#ifndef TROUPE_ERROR_H
#define TROUPE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro: name, value, message. Kept in one list so tr_strerror() and
 * tr_err_name() cannot drift from the enum. */
#define TR_ERRNO_MAP(XX)                                                       \
	XX(EINVAL, -22, "invalid argument")                                        \
	XX(ENOMEM, -12, "out of memory")                                           \
	XX(E2BIG, -7, "payload too large to copy into a message")                  \
	XX(ETIMEDOUT, -110, "timed out")                                           \
	XX(EDEAD, -4001, "actor reference is stale or the actor has stopped")      \
	XX(EFULL, -4002, "mailbox is full")                                        \
	XX(ENOTSTARTED, -4003, "actor system is not started")                      \
	XX(ESHUTDOWN, -4004, "actor system is shutting down or shut down")         \
	XX(ELIMIT, -4005, "a runtime limit was reached")                           \
	XX(ESTATE, -4006, "operation not valid in the current state")              \
	XX(ENOTACTOR, -4007, "must be called from inside an actor")               \
	XX(EWORKER, -4008, "must not be called from a worker thread")              \
	XX(EFAILED, -4009, "actor failed (generic failure reason)")               \
	XX(EAGAIN, -11, "not ready yet")                                           \
	XX(EKILLED, -4010, "actor was killed")                                    \
	XX(ESUPERVISOR, -4011, "supervisor gave up: restart intensity exceeded")   \
	XX(EEXIST, -17, "name already taken")                                      \
	XX(ENOENT, -2, "no such name or subscription")

typedef enum tr_error {
	TR_OK = 0,
#define TR__ERR_ENUM(name, value, msg) TR_##name = (value),
	TR_ERRNO_MAP(TR__ERR_ENUM)
#undef TR__ERR_ENUM
} tr_error;

/*
 * tr_strerror: a static, human-readable message for a troupe error code.
 * Thread-safe, wait-free. Returns "unknown error" for codes troupe never
 * produces (and "success" for 0); never NULL.
 */
const char *tr_strerror(int err);

/*
 * tr_err_name: the code's symbolic name ("TR_EDEAD"), or "TR_UNKNOWN".
 * Thread-safe, wait-free; never NULL.
 */
const char *tr_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_ERROR_H */
