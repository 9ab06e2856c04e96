/* Proxy configuration: proxy URLs, the environment as curl reads it, and
 * NO_PROXY matching. */
#include <stdlib.h>
#include <string.h>

#include "proxy.h"
#include "testutil.h"

static void test_proxy_no_proxy_table(void)
{
    static const struct {
        const char *list, *host;
        int match;
    } cases[] = {
        {"*", "anything.example", 1},
        {" * ", "10.1.2.3", 1},
        {"a.example, *", "b.example", 0},         /* "*" counts only alone */
        {"example.com", "example.com", 1},
        {"example.com", "api.example.com", 1},
        {"example.com", "a.b.example.com", 1},
        {".example.com", "example.com", 1},
        {".example.com", "api.example.com", 1},
        {"example.com", "badexample.com", 0},
        {"example.com", "example.com.evil.net", 0},
        {"EXAMPLE.com", "api.example.com", 1},
        {"example.com.", "api.example.com", 1},
        {"example.com", "api.example.com.", 1},
        {"foo.test,example.com", "example.com", 1},
        {"foo.test example.com", "x.example.com", 1},
        {"foo.test,,  ,bar.test", "bar.test", 1},
        {"localhost", "localhost", 1},
        {"127.0.0.1", "127.0.0.1", 1},
        {"127.0.0.1", "127.0.0.2", 0},
        {"127.0.0.0/8", "127.200.1.1", 1},
        {"10.0.0.0/8", "11.0.0.1", 0},
        {"192.168.1.0/24", "192.168.1.77", 1},
        {"192.168.1.0/24", "192.168.2.1", 0},
        {"192.168.1.1/33", "192.168.1.1", 0},     /* bad prefix length */
        {"0.0.0.0/0", "8.8.8.8", 1},
        {"::1", "::1", 1},
        {"[::1]", "::1", 1},
        {"0:0::1", "::1", 1},                     /* compared as addresses */
        {"fe80::/10", "fe80::1:2", 1},
        {"fe80::/10", "fec0::1", 0},
        {"10.0.0.0/8", "::ffff:10.0.0.1", 0},     /* another family */
        {"127.0.0.1", "localhost", 0},            /* no resolving */
        {"example.com", "10.0.0.1", 0},
        {"", "example.com", 0},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = sl_no_proxy_match(cases[i].list, cases[i].host);
        if (got != cases[i].match)
            fprintf(stderr, "\n  no_proxy \"%s\" host \"%s\": got %d\n", cases[i].list,
                    cases[i].host, got);
        CU_ASSERT_EQUAL(got, cases[i].match);
    }
    CU_ASSERT_EQUAL(sl_no_proxy_match(NULL, "a"), 0);
}

static void test_proxy_url_parse(void)
{
    static const struct {
        const char *url, *host, *origin, *auth;
        int port;
    } ok[] = {
        {"http://proxy.test:3128", "proxy.test", "http://proxy.test:3128", NULL, 3128},
        {"proxy.test:8080", "proxy.test", "http://proxy.test:8080", NULL, 8080},
        {"HTTP://Proxy.Test/", "proxy.test", "http://proxy.test:1080", NULL, 1080},
        {"http://[::1]:3128", "::1", "http://[::1]:3128", NULL, 3128},
        {"http://[::1]", "::1", "http://[::1]:1080", NULL, 1080},
        {"http://127.0.0.1:80", "127.0.0.1", "http://127.0.0.1:80", NULL, 80},
        {"http://Aladdin:open%20sesame@proxy.test:3128", "proxy.test",
         "http://proxy.test:3128", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", 3128},
        {"http://user@p.test:1", "p.test", "http://p.test:1", "Basic dXNlcjo=", 1},
        {"http://a:b@c@p.test:2", "p.test", "http://p.test:2", "Basic YTpiQGM=", 2},
    };
    static const char *const bad[] = {
        "", "https://proxy.test:443", "socks5://p.test:1080", "http://", "http://p.test:99999",
        "http://p.test:3128/path", "http://p.test:3128?q=1", "http://bad%zzuser:pw@p.test:1",
        "http://p .test:1",
    };
    size_t i;

    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        sl_proxy p;
        sluice_error err = {0};
        CU_ASSERT_EQUAL_FATAL(sl_proxy_parse(ok[i].url, &p, &err), 0);
        CU_ASSERT_STRING_EQUAL(p.host, ok[i].host);
        CU_ASSERT_EQUAL(p.port, ok[i].port);
        CU_ASSERT_STRING_EQUAL(p.origin, ok[i].origin);
        if (ok[i].auth) {
            CU_ASSERT_STRING_EQUAL(p.auth ? p.auth : "(none)", ok[i].auth);
        } else {
            CU_ASSERT_PTR_NULL(p.auth);
        }
        sl_proxy_free(&p);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_proxy p;
        sluice_error err = {0};
        CU_ASSERT_EQUAL(sl_proxy_parse(bad[i], &p, &err), SLUICE_EINVAL);
        CU_ASSERT_PTR_NULL(p.host);
        CU_ASSERT(err.msg[0] != '\0');
    }
}

/* A password never reaches a message, even when the rest is malformed. */
static void test_proxy_credentials_not_echoed(void)
{
    sl_proxy p;
    sluice_error err = {0};
    sl_proxy_conf c;

    CU_ASSERT_EQUAL(sl_proxy_parse("http://u:s3cret@p.test:1/x", &p, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(strstr(err.msg, "s3cret"));
    CU_ASSERT_EQUAL(sl_proxy_parse("http://u:s3cret@bad host:1", &p, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(strstr(err.msg, "s3cret"));

    setenv("https_proxy", "http://u:s3cret@p.test:99999", 1);
    CU_ASSERT_EQUAL(sl_proxy_conf_init(&c, NULL, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "https_proxy"));
    CU_ASSERT_PTR_NULL(strstr(err.msg, "s3cret"));
    unsetenv("https_proxy");
}

static const char *const proxy_vars[] = {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                         "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"};

static void clear_env(char **saved)
{
    size_t i;

    for (i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++) {
        const char *v = getenv(proxy_vars[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(proxy_vars[i]);
    }
}

static void restore_env(char **saved)
{
    size_t i;

    for (i = 0; i < sizeof proxy_vars / sizeof proxy_vars[0]; i++) {
        if (saved[i])
            setenv(proxy_vars[i], saved[i], 1);
        else
            unsetenv(proxy_vars[i]);
        free(saved[i]);
    }
}

/* The proxy for a target, as "origin" or "direct". */
static const char *via(const sl_proxy_conf *c, const char *target)
{
    sl_url u;
    const sl_proxy *p;
    static char out[128];

    CU_ASSERT_FATAL(sl_url_parse(target, &u, NULL) == 0);
    p = sl_proxy_for(c, &u);
    snprintf(out, sizeof out, "%s", p ? p->origin : "direct");
    sl_url_free(&u);
    return out;
}

static void test_proxy_environment_as_curl_reads_it(void)
{
    char *saved[8];
    sl_proxy_conf c;
    sluice_error err = {0};

    clear_env(saved);
    /* Nothing set: direct. */
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, NULL, &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "direct");
    sl_proxy_conf_free(&c);

    /* HTTP_PROXY in capitals is ignored (httpoxy); HTTPS_PROXY is not. */
    setenv("HTTP_PROXY", "http://upper.test:1", 1);
    setenv("HTTPS_PROXY", "http://secure.test:2", 1);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, NULL, &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "direct");
    CU_ASSERT_STRING_EQUAL(via(&c, "https://api.test/"), "http://secure.test:2");
    sl_proxy_conf_free(&c);

    /* Lower case wins over upper; all_proxy fills in. */
    setenv("https_proxy", "http://lower.test:3", 1);
    setenv("ALL_PROXY", "http://all.test:4", 1);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, NULL, &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "https://api.test/"), "http://lower.test:3");
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "http://all.test:4");
    sl_proxy_conf_free(&c);

    setenv("http_proxy", "http://plain.test:5", 1);
    setenv("NO_PROXY", "internal.test,10.0.0.0/8", 1);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, NULL, &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "http://plain.test:5");
    CU_ASSERT_STRING_EQUAL(via(&c, "http://db.internal.test/"), "direct");
    CU_ASSERT_STRING_EQUAL(via(&c, "https://10.2.3.4/"), "direct");
    sl_proxy_conf_free(&c);

    /* An explicit proxy replaces the variables; NO_PROXY still applies, as
     * in curl.  "" turns proxies off whatever the environment says. */
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, "http://explicit.test:6", &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "http://explicit.test:6");
    CU_ASSERT_STRING_EQUAL(via(&c, "https://api.test/"), "http://explicit.test:6");
    CU_ASSERT_STRING_EQUAL(via(&c, "http://internal.test/"), "direct");
    sl_proxy_conf_free(&c);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, "", &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "http://api.test/"), "direct");
    CU_ASSERT_STRING_EQUAL(via(&c, "https://api.test/"), "direct");
    sl_proxy_conf_free(&c);

    /* Empty variables count as unset. */
    setenv("https_proxy", "", 1);
    CU_ASSERT_EQUAL_FATAL(sl_proxy_conf_init(&c, NULL, &err), 0);
    CU_ASSERT_STRING_EQUAL(via(&c, "https://api.test/"), "http://secure.test:2");
    sl_proxy_conf_free(&c);
    restore_env(saved);
}

static CU_TestInfo tests[] = {
    {"test_proxy_no_proxy_table", test_proxy_no_proxy_table},
    {"test_proxy_url_parse", test_proxy_url_parse},
    {"test_proxy_credentials_not_echoed", test_proxy_credentials_not_echoed},
    {"test_proxy_environment_as_curl_reads_it", test_proxy_environment_as_curl_reads_it},
    CU_TEST_INFO_NULL,
};

void suite_proxy(void);
void suite_proxy(void)
{
    tu_add_suite("proxy", tests);
}
