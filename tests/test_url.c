/* URL parsing, normalisation, redirect resolution and percent-encoding. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "testutil.h"
#include "url.h"

/* "scheme://host_header/path?query": what the URL names, for comparison. */
static const char *url_str(const sl_url *u)
{
    static char s[512];

    snprintf(s, sizeof s, "%s://%s%s%s%s", u->tls ? "https" : "http", u->host_header, u->path,
             u->query ? "?" : "", u->query ? u->query : "");
    return s;
}

typedef struct valid_case {
    const char *in;
    int tls;
    const char *host;
    int port;
    int is_ipv6;
    const char *path;
    const char *query;      /* NULL = none */
    const char *origin;
    const char *host_header;
} valid_case;

static const valid_case valid[] = {
    {"http://example.com", 0, "example.com", 80, 0, "/", NULL, "http://example.com:80",
     "example.com"},
    {"HTTPS://Example.COM/A/b?X=Y#frag", 1, "example.com", 443, 0, "/A/b", "X=Y",
     "https://example.com:443", "example.com"},
    {"http://h:8080/p", 0, "h", 8080, 0, "/p", NULL, "http://h:8080", "h:8080"},
    {"https://h:443/", 1, "h", 443, 0, "/", NULL, "https://h:443", "h"},
    {"http://h:443/", 0, "h", 443, 0, "/", NULL, "http://h:443", "h:443"},
    {"https://h:80", 1, "h", 80, 0, "/", NULL, "https://h:80", "h:80"},
    {"http://h:/x", 0, "h", 80, 0, "/x", NULL, "http://h:80", "h"},
    {"http://h:00081", 0, "h", 81, 0, "/", NULL, "http://h:81", "h:81"},
    {"http://h:65535", 0, "h", 65535, 0, "/", NULL, "http://h:65535", "h:65535"},
    {"http://127.0.0.1:9/a%20b?c%2Fd=e", 0, "127.0.0.1", 9, 0, "/a%20b", "c%2Fd=e",
     "http://127.0.0.1:9", "127.0.0.1:9"},
    {"http://h?q", 0, "h", 80, 0, "/", "q", "http://h:80", "h"},
    {"http://h/p?", 0, "h", 80, 0, "/p", "", "http://h:80", "h"},
    {"http://h#only-fragment", 0, "h", 80, 0, "/", NULL, "http://h:80", "h"},
    {"http://[::1]/", 0, "::1", 80, 1, "/", NULL, "http://[::1]:80", "[::1]"},
    {"https://[2001:DB8::1]:8443/x", 1, "2001:db8::1", 8443, 1, "/x", NULL,
     "https://[2001:db8::1]:8443", "[2001:db8::1]:8443"},
    {"http://[::ffff:1.2.3.4]", 0, "::ffff:1.2.3.4", 80, 1, "/", NULL,
     "http://[::ffff:1.2.3.4]:80", "[::ffff:1.2.3.4]"},
    {"http://h/caf\xc3\xa9?q=\xff", 0, "h", 80, 0, "/caf%C3%A9", "q=%FF", "http://h:80", "h"},
    {"http://a-b_c~d.example./p@x", 0, "a-b_c~d.example.", 80, 0, "/p@x", NULL,
     "http://a-b_c~d.example.:80", "a-b_c~d.example."},
};

static void test_url_parse_valid_table(void)
{
    size_t i;

    for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const valid_case *c = &valid[i];
        sl_url u;
        sluice_error err = {0};
        int rc = sl_url_parse(c->in, &u, &err);

        CU_ASSERT_EQUAL_FATAL(rc, 0);
        if (rc)
            continue;
        CU_ASSERT_EQUAL(u.tls, c->tls);
        CU_ASSERT_STRING_EQUAL(u.host, c->host);
        CU_ASSERT_EQUAL(u.port, c->port);
        CU_ASSERT_EQUAL(u.is_ipv6, c->is_ipv6);
        CU_ASSERT_STRING_EQUAL(u.path, c->path);
        if (c->query) {
            CU_ASSERT_PTR_NOT_NULL_FATAL(u.query);
            CU_ASSERT_STRING_EQUAL(u.query, c->query);
        } else {
            CU_ASSERT_PTR_NULL(u.query);
        }
        CU_ASSERT_STRING_EQUAL(u.origin, c->origin);
        CU_ASSERT_STRING_EQUAL(u.host_header, c->host_header);
        sl_url_free(&u);
        CU_ASSERT_PTR_NULL(u.mem_);
    }
}

typedef struct bad_case {
    const char *in;
    const char *msg;    /* a substring the message must hold */
} bad_case;

static const bad_case bad[] = {
    {"ftp://h/", "scheme"},
    {"http:/h/", "scheme"},
    {"http:\\\\h\\", "scheme"},
    {"ht\ttp://h/", "scheme"},
    {" http://h/", "scheme"},
    {"h/p", "scheme"},
    {"", "scheme"},
    {"http://user:pw@h/", "credentials in URLs are not accepted; use an Authorization header"},
    {"http://user@h/", "credentials"},
    {"http://h\r\n/", "host"},
    {"http://h x/", "host"},
    {"http:///p", "host is empty"},
    {"http://:80/", "host is empty"},
    {"http://h%41/", "host"},
    {"http://h!/", "host"},
    {"http://1.2.3/", "IPv4"},
    {"http://1.2.3.256/", "IPv4"},
    {"http://[::1/", "host"},
    {"http://[fe80::1%25eth0]/", "zone"},
    {"http://[zz::1]/", "IPv6"},
    {"http://[::1]x/", "host"},
    {"http://[]/", "IPv6"},
    {"http://h:0/", "port"},
    {"http://h:65536/", "port"},
    {"http://h:123456/", "port"},
    {"http://h:8a/", "port"},
    {"http://h:-1/", "port"},
    {"http://h: 80/", "port"},
    {"http://h/a b", "path"},
    {"http://h/a\r\nX: y", "path"},
    {"http://h/a\x7f", "path"},
    {"http://h/a\x01", "path"},
    {"http://h/a?b c", "query"},
    {"http://h/a?b\n", "query"},
    {"http://h/a?b#c d", "fragment"},
};

static void test_url_parse_refuses_each_part(void)
{
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sl_url u;
        sluice_error err = {0};
        int rc = sl_url_parse(bad[i].in, &u, &err);

        CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
        CU_ASSERT_EQUAL(err.code, SLUICE_EINVAL);
        if (!strstr(err.msg, bad[i].msg))
            fprintf(stderr, "\n  case %zu: message \"%s\" lacks \"%s\"\n", i, err.msg, bad[i].msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, bad[i].msg));
        CU_ASSERT_PTR_NULL(u.mem_);
        CU_ASSERT_PTR_NULL(u.host);
    }
}

static void test_url_credentials_not_echoed(void)
{
    sl_url u;
    sluice_error err = {0};

    CU_ASSERT_EQUAL(sl_url_parse("https://alice:s3cret@h/", &u, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(strstr(err.msg, "s3cret"));
    CU_ASSERT_PTR_NULL(strstr(err.msg, "alice"));
}

static void test_url_parse_null_and_alloc_failure(void)
{
    sl_url u;
    sluice_error err = {0};

    CU_ASSERT_EQUAL(sl_url_parse(NULL, &u, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_url_parse("http://h/", NULL, &err), SLUICE_EINVAL);
    tu_alloc_install(1, 0);
    CU_ASSERT_EQUAL(sl_url_parse("http://h/", &u, &err), SLUICE_ENOMEM);
    CU_ASSERT_PTR_NULL(u.mem_);
    CU_ASSERT_EQUAL(sl_url_parse("http://h/", &u, &err), 0);
    CU_ASSERT_EQUAL(tu_alloc_count(), 2);   /* one allocation per URL */
    sl_url_free(&u);
    sl_url_free(&u);                         /* a freed URL frees again harmlessly */
    sl_url_free(NULL);
    CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
    tu_alloc_uninstall();
}

/* RFC 3986 section 5.4 with the base's scheme made http.  NULL = refused
 * (a non-http scheme). */
static const char *const resolve_cases[][2] = {
    /* 5.4.1 normal examples */
    {"g:h", NULL},
    {"g", "http://a/b/c/g"},
    {"./g", "http://a/b/c/g"},
    {"g/", "http://a/b/c/g/"},
    {"/g", "http://a/g"},
    {"//g", "http://g/"},
    {"?y", "http://a/b/c/d;p?y"},
    {"g?y", "http://a/b/c/g?y"},
    {"#s", "http://a/b/c/d;p?q"},
    {"g#s", "http://a/b/c/g"},
    {"g?y#s", "http://a/b/c/g?y"},
    {";x", "http://a/b/c/;x"},
    {"g;x", "http://a/b/c/g;x"},
    {"g;x?y#s", "http://a/b/c/g;x?y"},
    {"", "http://a/b/c/d;p?q"},
    {".", "http://a/b/c/"},
    {"./", "http://a/b/c/"},
    {"..", "http://a/b/"},
    {"../", "http://a/b/"},
    {"../g", "http://a/b/g"},
    {"../..", "http://a/"},
    {"../../", "http://a/"},
    {"../../g", "http://a/g"},
    /* 5.4.2 abnormal examples */
    {"../../../g", "http://a/g"},
    {"../../../../g", "http://a/g"},
    {"/./g", "http://a/g"},
    {"/../g", "http://a/g"},
    {"g.", "http://a/b/c/g."},
    {".g", "http://a/b/c/.g"},
    {"g..", "http://a/b/c/g.."},
    {"..g", "http://a/b/c/..g"},
    {"./../g", "http://a/b/g"},
    {"./g/.", "http://a/b/c/g/"},
    {"g/./h", "http://a/b/c/g/h"},
    {"g/../h", "http://a/b/c/h"},
    {"g;x=1/./y", "http://a/b/c/g;x=1/y"},
    {"g;x=1/../y", "http://a/b/c/y"},
    {"g?y/./x", "http://a/b/c/g?y/./x"},
    {"g?y/../x", "http://a/b/c/g?y/../x"},
    {"g#s/./x", "http://a/b/c/g"},
    {"g#s/../x", "http://a/b/c/g"},
    {"http:g", NULL},
    /* the forms a Location header takes in practice */
    {"https://other:8443/x?y", "https://other:8443/x?y"},
    {"HTTP://OTHER/", "http://other/"},
    {"//other:81/z", "http://other:81/z"},
    {"/a//b/../c", "http://a/a//c"},
};

static void test_url_resolve_rfc3986_examples(void)
{
    sl_url base, out;
    sluice_error err = {0};
    size_t i;

    CU_ASSERT_EQUAL_FATAL(sl_url_parse("http://a/b/c/d;p?q", &base, &err), 0);
    for (i = 0; i < sizeof resolve_cases / sizeof resolve_cases[0]; i++) {
        int rc = sl_url_resolve(&base, resolve_cases[i][0], &out, &err);
        if (!resolve_cases[i][1]) {
            CU_ASSERT_EQUAL(rc, SLUICE_EINVAL);
            continue;
        }
        CU_ASSERT_EQUAL(rc, 0);
        if (rc)
            continue;
        if (strcmp(url_str(&out), resolve_cases[i][1]) != 0)
            fprintf(stderr, "\n  resolve \"%s\": got %s, want %s\n", resolve_cases[i][0],
                    url_str(&out), resolve_cases[i][1]);
        CU_ASSERT_STRING_EQUAL(url_str(&out), resolve_cases[i][1]);
        sl_url_free(&out);
    }
    sl_url_free(&base);
}

static void test_url_resolve_keeps_base_origin(void)
{
    sl_url base, out;
    sluice_error err = {0};

    CU_ASSERT_EQUAL_FATAL(sl_url_parse("https://[::1]:8443/dir/page", &base, &err), 0);
    CU_ASSERT_EQUAL_FATAL(sl_url_resolve(&base, "../up?x=1", &out, &err), 0);
    CU_ASSERT_EQUAL(out.tls, 1);
    CU_ASSERT_EQUAL(out.is_ipv6, 1);
    CU_ASSERT_STRING_EQUAL(out.origin, "https://[::1]:8443");
    CU_ASSERT_STRING_EQUAL(out.path, "/up");
    CU_ASSERT_STRING_EQUAL(out.query, "x=1");
    sl_url_free(&out);
    /* A scheme-relative location keeps the base's scheme. */
    CU_ASSERT_EQUAL_FATAL(sl_url_resolve(&base, "//example.org/p", &out, &err), 0);
    CU_ASSERT_STRING_EQUAL(out.origin, "https://example.org:443");
    sl_url_free(&out);
    sl_url_free(&base);
}

static void test_url_resolve_refuses_bad_location(void)
{
    sl_url base, out;
    sluice_error err = {0};

    CU_ASSERT_EQUAL_FATAL(sl_url_parse("http://a/b/c", &base, &err), 0);
    /* A CRLF hidden in a segment that dot removal would drop is still
     * refused. */
    CU_ASSERT_EQUAL(sl_url_resolve(&base, "x\r\nSet-Cookie: a/../y", &out, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "path"));
    CU_ASSERT_EQUAL(sl_url_resolve(&base, "y?a b", &out, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "query"));
    CU_ASSERT_EQUAL(sl_url_resolve(&base, "//u:p@evil/", &out, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "credentials"));
    CU_ASSERT_EQUAL(sl_url_resolve(&base, "javascript:alert(1)", &out, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_url_resolve(&base, NULL, &out, &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_url_resolve(NULL, "/x", &out, &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NULL(out.mem_);
    /* Without a base only an absolute location resolves. */
    CU_ASSERT_EQUAL(sl_url_resolve(NULL, "http://h/x", &out, &err), 0);
    CU_ASSERT_STRING_EQUAL(out.path, "/x");
    sl_url_free(&out);
    sl_url_free(&base);
}

static void test_url_resolve_alloc_failure(void)
{
    sl_url base, out;
    sluice_error err = {0};
    long n;
    int rc;

    CU_ASSERT_EQUAL_FATAL(sl_url_parse("http://a/b/c/d;p?q", &base, &err), 0);
    for (n = 1; n < 50; n++) {
        tu_alloc_install(n, 0);
        rc = sl_url_resolve(&base, "../g/./h?y", &out, &err);
        CU_ASSERT(rc == 0 || rc == SLUICE_ENOMEM);
        if (rc == 0) {
            CU_ASSERT_STRING_EQUAL(url_str(&out), "http://a/b/g/h?y");
            sl_url_free(&out);
        }
        CU_ASSERT_EQUAL(tu_alloc_outstanding(), 0);
        tu_alloc_uninstall();
        if (rc == 0)
            break;
    }
    CU_ASSERT(n < 50);
    sl_url_free(&base);
}

static void test_url_encode_unreserved_only(void)
{
    sl_buf b = SL_BUF_INIT;

    CU_ASSERT_EQUAL(sl_buf_puts(&b, "q="), 0);
    CU_ASSERT_EQUAL(sl_url_encode(&b, "AZaz09-._~ /?#&=+%\x01\xff"), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "q=AZaz09-._~%20%2F%3F%23%26%3D%2B%25%01%FF");
    CU_ASSERT_EQUAL(b.len, strlen(b.data));
    CU_ASSERT_EQUAL(sl_url_encode(&b, ""), 0);
    CU_ASSERT_EQUAL(sl_url_encode(&b, NULL), SLUICE_EINVAL);
    sl_buf_free(&b);
    tu_alloc_install(1, 0);
    CU_ASSERT_EQUAL(sl_url_encode(&b, "x y"), SLUICE_ENOMEM);
    sl_buf_free(&b);
    tu_alloc_uninstall();
}

static void test_url_check_bytes_names_part(void)
{
    sluice_error err = {0};

    CU_ASSERT_EQUAL(sl_url_check_bytes("abc/~%", 6, "path", &err), 0);
    CU_ASSERT_EQUAL(sl_url_check_bytes("a\0b", 3, "query", &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "query"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "NUL"));
    CU_ASSERT_EQUAL(sl_url_check_bytes("a\rb", 3, "path", &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "CR"));
    CU_ASSERT_EQUAL(sl_url_check_bytes("a\x7f", 2, "host", &err), SLUICE_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "DEL"));
    CU_ASSERT_EQUAL(sl_url_check_bytes("a b", 3, "path", &err), SLUICE_EINVAL);
    CU_ASSERT_EQUAL(sl_url_check_bytes("a\tb", 3, "path", &err), SLUICE_EINVAL);
    /* Only the given length is looked at. */
    CU_ASSERT_EQUAL(sl_url_check_bytes("ab\n", 2, "path", &err), 0);
    CU_ASSERT_EQUAL(sl_url_check_bytes("\xc3\xa9", 2, "path", &err), 0);
}

static CU_TestInfo tests[] = {
    {"test_url_parse_valid_table", test_url_parse_valid_table},
    {"test_url_parse_refuses_each_part", test_url_parse_refuses_each_part},
    {"test_url_credentials_not_echoed", test_url_credentials_not_echoed},
    {"test_url_parse_null_and_alloc_failure", test_url_parse_null_and_alloc_failure},
    {"test_url_resolve_rfc3986_examples", test_url_resolve_rfc3986_examples},
    {"test_url_resolve_keeps_base_origin", test_url_resolve_keeps_base_origin},
    {"test_url_resolve_refuses_bad_location", test_url_resolve_refuses_bad_location},
    {"test_url_resolve_alloc_failure", test_url_resolve_alloc_failure},
    {"test_url_encode_unreserved_only", test_url_encode_unreserved_only},
    {"test_url_check_bytes_names_part", test_url_check_bytes_names_part},
    CU_TEST_INFO_NULL,
};

void suite_url(void);
void suite_url(void)
{
    tu_add_suite("url", tests);
}
