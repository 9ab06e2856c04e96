/* get: GET one URL and print the status and the body.
 *
 * A client is made for a base URL (the service); requests name paths
 * relative to it.  Any HTTP status is a response; a negative code is a
 * transport, protocol or policy failure, explained in sluice_error.
 *
 * usage: get [BASE_URL] [PATH]
 *   defaults http://127.0.0.1:8080 and /json
 *   e.g. get https://example.com /
 */
#include <stdio.h>

#include <sluice.h>

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    const char *path = argc > 2 ? argv[2] : "/json";
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_error err;
    size_t len;
    int rc = 1;

    sluice_factory *f = sluice_factory_new(NULL, &err);   /* NULL: the default preset */
    if (!f) {
        fprintf(stderr, "get: %s: %s\n", sluice_err_name(err.code), err.msg);
        return 1;
    }
    sluice_client_opts_init(&co);
    co.base_url = base;
    c = sluice_factory_client(f, "example", &co, &err);   /* owned by the factory */
    if (c && sluice_get(c, path, &r, &err) == 0) {
        const char *body = sluice_response_body(r, &len);
        printf("status %d, %zu bytes, content-type %s\n%.*s\n", sluice_response_status(r), len,
               sluice_response_header(r, "content-type") ? sluice_response_header(r, "content-type")
                                                         : "(none)",
               (int)len, body);
        rc = sluice_response_status(r) / 100 == 2 ? 0 : 1;
        sluice_response_free(r);
    } else {
        fprintf(stderr, "get: %s: %s\n", sluice_err_name(err.code), err.msg);
    }
    sluice_factory_free(f);
    return rc;
}
