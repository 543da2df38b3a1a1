#include "troupe/error.h"

const char *tr_strerror(int err)
{
	switch (err) {
	case TR_OK:
		return "success";
#define TR__ERR_MSG(name, value, msg)                                                              \
	case TR_##name:                                                                            \
		return msg;
		TR_ERRNO_MAP(TR__ERR_MSG)
#undef TR__ERR_MSG
	default:
		return "unknown error";
	}
}

const char *tr_err_name(int err)
{
	switch (err) {
	case TR_OK:
		return "TR_OK";
#define TR__ERR_NAME(name, value, msg)                                                             \
	case TR_##name:                                                                            \
		return "TR_" #name;
		TR_ERRNO_MAP(TR__ERR_NAME)
#undef TR__ERR_NAME
	default:
		return "TR_UNKNOWN";
	}
}
