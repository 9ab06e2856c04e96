/* post_json: POST a JSON document and print the answer.
 *
 * The body is only read during the call.  A POST is not retried after it
 * was written unless the request says it is safe (SLUICE_REQ_IDEMPOTENT),
 * and it is never coalesced with another caller's.
 *
 * usage: post_json [BASE_URL] [PATH] [JSON]
 *   defaults http://127.0.0.1:8080, /echo and {"name":"sluice","n":1}
 *   (the mock API's /echo answers with the request it received)
 */
#include <stdio.h>
#include <string.h>

#include <sluice.h>

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "http://127.0.0.1:8080";
    const char *path = argc > 2 ? argv[2] : "/echo";
    const char *json = argc > 3 ? argv[3] : "{\"name\":\"sluice\",\"n\":1}";
    sluice_header h[] = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
    sluice_request req = {.method = "POST", .path = path, .headers = h, .nheaders = 2,
                          .body = json, .body_len = strlen(json), .timeout_ms = 5000};
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_error err;
    sluice_factory *f;
    size_t len;
    int rc = 1;

    if (!(f = sluice_factory_new(NULL, &err))) {
        fprintf(stderr, "post_json: %s: %s\n", sluice_err_name(err.code), err.msg);
        return 1;
    }
    sluice_client_opts_init(&co);
    co.base_url = base;
    c = sluice_factory_client(f, "example", &co, &err);
    if (c && sluice_client_do(c, &req, &r, &err) == 0) {
        const char *body = sluice_response_body(r, &len);
        printf("status %d\n%.*s\n", sluice_response_status(r), (int)len, body);
        rc = sluice_response_status(r) / 100 == 2 ? 0 : 1;
        sluice_response_free(r);
    } else {
        fprintf(stderr, "post_json: %s: %s\n", sluice_err_name(err.code), err.msg);
    }
    sluice_factory_free(f);
    return rc;
}
