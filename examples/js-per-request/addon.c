/* The guest side of running node per request in kvmbox: a tiny Node-API addon that node loads
 * with require(). pause() is kvmbox_pause() (node is initialized: snapshot here; a resumed
 * fork continues after it); request() asks the host for the request body (a host call);
 * respond(text) hands the answer back; entropy() gives 32 fresh random bytes (getrandom: in
 * kvmbox always fresh host randomness, where everything else in the snapshot — V8's
 * Math.random state included — is the same for every request). Natively the kvmbox calls
 * return -ENOSYS / null.
 *   gcc -O2 -shared -fPIC -I node_modules/node-api-headers/include -o kvmbox.node addon.c
 */
#include <node_api.h>
#include <stdlib.h>
#include <sys/random.h>

#include "../../guest/include/kvmbox.h"

#define HC_REQUEST 0x10200L
#define HC_RESPOND 0x10201L
#define MAX_REQUEST (1 << 20)

static napi_value pause_(napi_env env, napi_callback_info info) {
    (void)info;
    napi_value r;
    napi_create_int64(env, kvmbox_pause(), &r);
    return r;
}

static napi_value request(napi_env env, napi_callback_info info) {
    (void)info;
    static char buf[MAX_REQUEST];
    long n = kvmbox_hostcall2(HC_REQUEST, (long)buf, (long)sizeof buf);
    napi_value r;
    if (n < 0 || n > MAX_REQUEST) napi_get_null(env, &r);
    else napi_create_string_utf8(env, buf, (size_t)n, &r);
    return r;
}

static napi_value respond(napi_env env, napi_callback_info info) {
    size_t argc = 1, len = 0;
    napi_value argv[1], r;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 1 || napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) {
        napi_throw_type_error(env, NULL, "respond(text) needs a string");
        return NULL;
    }
    char *text = malloc(len + 1);
    napi_get_value_string_utf8(env, argv[0], text, len + 1, &len);
    napi_create_int64(env, kvmbox_hostcall2(HC_RESPOND, (long)text, (long)len), &r);
    free(text);
    return r;
}

static napi_value entropy(napi_env env, napi_callback_info info) {
    (void)info;
    void *data;
    napi_value buf;
    napi_create_buffer(env, 32, &data, &buf);
    if (getrandom(data, 32, 0) != 32) {
        napi_throw_error(env, NULL, "getrandom failed");
        return NULL;
    }
    return buf;
}

NAPI_MODULE_INIT() {
    napi_property_descriptor fns[] = {
        {"pause", NULL, pause_, NULL, NULL, NULL, napi_default, NULL},
        {"request", NULL, request, NULL, NULL, NULL, napi_default, NULL},
        {"respond", NULL, respond, NULL, NULL, NULL, napi_default, NULL},
        {"entropy", NULL, entropy, NULL, NULL, NULL, napi_default, NULL},
    };
    napi_define_properties(env, exports, 4, fns);
    return exports;
}
