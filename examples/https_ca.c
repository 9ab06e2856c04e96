/* https_ca: HTTPS verified against a CA file of your own.
 *
 * TLS settings belong to the factory: every client it hands out shares one
 * TLS context and session cache.  Without ca_file the system's store is
 * used; either way the certificate and the host name are verified.  A
 * failure is SLUICE_ETLS with the cause and the host in the message.
 *
 * usage: https_ca [BASE_URL] [CA_FILE] [PATH]
 *   defaults https://localhost:8443, ca.pem and /json
 *   (tests/gen-certs.sh DIR makes DIR/ca.pem and a server.pem/server.key
 *   for `sluice-mockapi --tls-cert DIR/server.pem --tls-key DIR/server.key`)
 */
#include <stdio.h>

#include <sluice.h>

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "https://localhost:8443";
    const char *path = argc > 3 ? argv[3] : "/json";
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_factory *f;
    sluice_error err;
    int rc = 1;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = argc > 2 ? argv[2] : "ca.pem";   /* copied by sluice_factory_new */
    fo.tls_min_version = 12;
    if (!(f = sluice_factory_new(&fo, &err))) {     /* an unreadable CA file fails here */
        fprintf(stderr, "https_ca: %s: %s\n", sluice_err_name(err.code), err.msg);
        return 1;
    }
    sluice_client_opts_init(&co);
    co.base_url = base;
    c = sluice_factory_client(f, "secure", &co, &err);
    if (c && sluice_get(c, path, &r, &err) == 0) {
        printf("status %d over verified TLS\n%s\n", sluice_response_status(r),
               (const char *)sluice_response_body(r, NULL));
        rc = sluice_response_status(r) / 100 == 2 ? 0 : 1;
        sluice_response_free(r);
    } else {
        fprintf(stderr, "https_ca: %s: %s\n", sluice_err_name(err.code), err.msg);
    }
    sluice_factory_free(f);
    return rc;
}
