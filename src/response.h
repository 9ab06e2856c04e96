/* Responses: an immutable, refcounted body of data shared by every caller
 * of a coalesced flight, seen through per-caller handles.
 *
 * The data and the first handle are one allocation; a follower's handle
 * is a small allocation of its own pointing at the same data.  Dropping
 * the last handle frees the data. */
#ifndef SL_RESPONSE_H
#define SL_RESPONSE_H

#include "http1.h"
#include "sluice.h"

typedef struct sl_resp_data sl_resp_data;

struct sluice_response {
    sl_resp_data *d;
    int coalesced;
    int reused;
    int attempts;
};

struct sl_resp_data {
    int refs;                    /* atomic: handles alive */
    sl_http_resp http;
    struct sluice_response primary;
};

/* Takes ownership of *http (left zeroed) and returns the primary handle,
 * or NULL on ENOMEM (http is then freed). */
sluice_response *sl_response_new(sl_http_resp *http);

/* One more reference on the primary handle: the same pointer, to be freed
 * once more (the coalescing leader's, which shares the primary with the
 * flight).  Cannot fail.  Given a follower's handle it shares instead
 * (and may then return NULL on ENOMEM). */
sluice_response *sl_response_ref(sluice_response *r);

/* Another handle on the same data (a follower's), or NULL on ENOMEM. */
sluice_response *sl_response_share(const sluice_response *r, int coalesced);

/* A Cache-Control directive test, for the micro-cache. */
int sl_response_cacheable(const sluice_response *r);

#endif
