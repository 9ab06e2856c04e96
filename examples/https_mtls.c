/* https_mtls: mutual TLS, the client proving who it is with a certificate.
 *
 * The client certificate and key are factory options, like the CA: every
 * client of the factory presents them.  A server that wants a certificate
 * and gets none (or one it does not trust) fails the handshake, and the
 * call returns SLUICE_ETLS.
 *
 * usage: https_mtls [BASE_URL] [CA_FILE] [CERT_FILE] [KEY_FILE] [PATH]
 *   defaults https://localhost:8443, ca.pem, client.pem, client.key, /json
 *   (tests/gen-certs.sh makes all three; serve with
 *   `sluice-mockapi --tls-cert server.pem --tls-key server.key --client-ca ca.pem`)
 */
#include <stdio.h>

#include <sluice.h>

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "https://localhost:8443";
    const char *path = argc > 5 ? argv[5] : "/json";
    sluice_factory_opts fo;
    sluice_client_opts co;
    sluice_response *r = NULL;
    sluice_client *c;
    sluice_factory *f;
    sluice_error err;
    int rc = 1;

    sluice_factory_opts_init(&fo, SLUICE_PRESET_DEFAULT);
    fo.ca_file = argc > 2 ? argv[2] : "ca.pem";
    fo.client_cert_file = argc > 3 ? argv[3] : "client.pem";   /* PEM chain */
    fo.client_key_file = argc > 4 ? argv[4] : "client.key";    /* PEM private key */
    if (!(f = sluice_factory_new(&fo, &err))) {
        fprintf(stderr, "https_mtls: %s: %s\n", sluice_err_name(err.code), err.msg);
        return 1;
    }
    sluice_client_opts_init(&co);
    co.base_url = base;
    c = sluice_factory_client(f, "secure", &co, &err);
    if (c && sluice_get(c, path, &r, &err) == 0) {
        printf("status %d with a client certificate\n%s\n", sluice_response_status(r),
               (const char *)sluice_response_body(r, NULL));
        rc = sluice_response_status(r) / 100 == 2 ? 0 : 1;
        sluice_response_free(r);
    } else {
        fprintf(stderr, "https_mtls: %s: %s\n", sluice_err_name(err.code), err.msg);
    }
    sluice_factory_free(f);
    return rc;
}
