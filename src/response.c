/* Responses: accessors and reference counting. */
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "response.h"

sluice_response *sl_response_new(sl_http_resp *http)
{
    sl_resp_data *d = sl_malloc(sizeof *d);

    if (!d) {
        sl_http_resp_free(http);
        return NULL;
    }
    d->refs = 1;
    d->http = *http;
    memset(http, 0, sizeof *http);
    d->primary = (struct sluice_response){d, 0, 0, 1};
    return &d->primary;
}

sluice_response *sl_response_share(const sluice_response *r, int coalesced)
{
    sluice_response *h = sl_malloc(sizeof *h);

    if (!h)
        return NULL;
    *h = *r;
    h->coalesced = coalesced;
    __atomic_add_fetch(&r->d->refs, 1, __ATOMIC_RELAXED);
    return h;
}

sluice_response *sl_response_ref(sluice_response *r)
{
    if (r != &r->d->primary)
        return sl_response_share(r, r->coalesced);
    __atomic_add_fetch(&r->d->refs, 1, __ATOMIC_RELAXED);
    return r;
}

void sluice_response_free(sluice_response *r)
{
    sl_resp_data *d;

    if (!r)
        return;
    d = r->d;
    if (r != &d->primary)
        sl_free(r);
    if (__atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        sl_http_resp_free(&d->http);
        sl_free(d);
    }
}

int sluice_response_status(const sluice_response *r)
{
    return r ? r->d->http.status : 0;
}

const char *sluice_response_header(const sluice_response *r, const char *name)
{
    size_t i;

    if (!r || !name)
        return NULL;
    for (i = 0; i < r->d->http.nheaders; i++)
        if (strcasecmp(r->d->http.headers[i].name, name) == 0)
            return r->d->http.headers[i].value;
    return NULL;
}

size_t sluice_response_header_count(const sluice_response *r)
{
    return r ? r->d->http.nheaders : 0;
}

const sluice_header *sluice_response_header_at(const sluice_response *r, size_t i)
{
    if (!r || i >= r->d->http.nheaders)
        return NULL;
    return &r->d->http.headers[i];
}

const void *sluice_response_body(const sluice_response *r, size_t *len)
{
    if (!r) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = r->d->http.body_len;
    return r->d->http.body ? r->d->http.body : "";
}

int sluice_response_coalesced(const sluice_response *r)
{
    return r ? r->coalesced : 0;
}

int sluice_response_reused(const sluice_response *r)
{
    return r ? r->reused : 0;
}

int sluice_response_attempts(const sluice_response *r)
{
    return r ? r->attempts : 0;
}

int sluice_response_decoded(const sluice_response *r)
{
    return r ? r->d->http.decoded : 0;
}

/* Cache-Control no-store or private keeps a response out of the window. */
int sl_response_cacheable(const sluice_response *r)
{
    const char *cc = sluice_response_header(r, "Cache-Control");
    int status = sluice_response_status(r);

    if (status < 200 || status > 299)
        return 0;
    if (!cc)
        return 1;
    return !strcasestr(cc, "no-store") && !strcasestr(cc, "private");
}

int sluice_response_http_version(const sluice_response *r)
{
    if (!r)
        return 0;
    return r->d->http.version ? r->d->http.version : 10 + r->d->http.minor_version;
}
