/* The GCRA script the Redis backend runs, and the decoding of its reply. */
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "limiter.h"

/* The GCRA script; see limiter.h for the arithmetic, which it repeats
 * operation for operation (sl_gcra_eval).  TATs are microseconds since
 * 2020-01-01 (small enough for exact doubles) and go to SET as Lua numbers,
 * which Redis writes with 17 significant digits (or the shortest exact
 * form), so they read back bit for bit.  A key that is not a number (or
 * not a string) is treated as absent and overwritten.  Each key is read
 * once and written once per batch however many decisions it has: the
 * decisions still see each other in order, and the script is atomic. */
const char sl_redis_script[] =
    "local tol, epoch = 0.5, 1577836800\n"
    "local n = #KEYS\n"
    "if #ARGV ~= n * 5 then\n"
    "  return redis.error_reply('ERR sluice gcra: 5 arguments per key expected')\n"
    "end\n"
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local floor, ceil = math.floor, math.ceil\n"
    "local function ceil_ms(us)\n"
    "  local v = ceil((us - tol) / 1000)\n"
    "  if v > 0 then return v end\n"
    "  return 0\n"
    "end\n"
    "local out, tats, stored, clock = {}, {}, {}, nil\n"
    "for i = 1, n do\n"
    "  local a, key, k = (i - 1) * 5, KEYS[i], (i - 1) * 4\n"
    "  local op, t, burst = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local arg, now = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "  if now < 0 then\n"
    "    if not clock then\n"
    "      local tm = redis.call('TIME')\n"
    "      clock = (tonumber(tm[1]) - epoch) * 1000000 + tonumber(tm[2])\n"
    "    end\n"
    "    now = clock\n"
    "  end\n"
    "  local tat = tats[key]\n"
    "  if tat == nil then\n"
    "    tat = tonumber(redis.pcall('GET', key)) or false\n"
    "    tats[key] = tat\n"
    "  end\n"
    "  if not tat or tat < now then tat = now end\n"
    "  local boff, cost = t * burst, arg\n"
    "  if op == 'd' then\n"
    "    local want = now + arg * 1000 + t * (burst - 1)\n"
    "    if want > tat then tat = want; tats[key] = tat; stored[key] = now end\n"
    "    cost = 1\n"
    "  elseif op == 'p' then\n"
    "    cost = 1\n"
    "  elseif op ~= 'c' then\n"
    "    return redis.error_reply('ERR sluice gcra: unknown op')\n"
    "  end\n"
    "  local new_tat = tat + t * cost\n"
    "  local diff = now - (new_tat - boff)\n"
    "  if diff < -tol then\n"
    "    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = 0, 0, ceil_ms(-diff), ceil_ms(tat - now)\n"
    "  else\n"
    "    out[k + 1], out[k + 2] = 1, floor((diff + tol) / t)\n"
    "    out[k + 3], out[k + 4] = -1, ceil_ms(new_tat - now)\n"
    "    if op == 'c' then tats[key] = new_tat; stored[key] = now end\n"
    "  end\n"
    "end\n"
    "for key, at in pairs(stored) do\n"
    "  local tat = tats[key]\n"
    "  redis.call('SET', key, tat, 'PX', math.max(1, ceil_ms(tat - at)))\n"
    "end\n"
    "return out\n";

/* ------------------------------------------------------------------------ */
/* Reply decoding                                                           */
/* ------------------------------------------------------------------------ */

static int bad_reply(sluice_error *err, const char *where, const char *what, size_t i)
{
    return sl_err(err, SLUICE_ELIMITER, "redis %s: malformed script reply: %s (decision %zu)",
                  where, what, i);
}

static int decode_one(redisReply *const *e, size_t i, sluice_limit_result *out, const char *where,
                      sluice_error *err)
{
    long long v[4];
    int j;

    for (j = 0; j < 4; j++) {
        if (!e[j] || e[j]->type != REDIS_REPLY_INTEGER)
            return bad_reply(err, where, "an element is not an integer", i);
        v[j] = e[j]->integer;
        if (v[j] > LONG_MAX || v[j] < -1)
            return bad_reply(err, where, "a value is out of range", i);
    }
    if ((v[0] != 0 && v[0] != 1) || v[1] < 0 || v[3] < 0 || (v[0] ? v[2] != -1 : v[2] < 0))
        return bad_reply(err, where, "inconsistent values", i);
    out->allowed = (int)v[0];
    out->remaining = (long)v[1];
    out->retry_after_ms = (long)v[2];
    out->reset_after_ms = (long)v[3];
    return 0;
}

int sl_redis_decode_reply(const redisReply *reply, size_t n, sluice_limit_result *out,
                          const char *where, sluice_error *err)
{
    char text[128];
    size_t i;

    if (!where)
        where = "(unknown)";
    if (!reply)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: no reply", where);
    if (reply->type == REDIS_REPLY_ERROR) {
        sl_redis_reply_text(reply, text, sizeof text);
        return sl_err(err, SLUICE_ELIMITER, "redis %s: script failed: %s", where, text);
    }
    if (reply->type != REDIS_REPLY_ARRAY)
        return sl_err(err, SLUICE_ELIMITER, "redis %s: malformed script reply: type %d, not an array",
                      where, reply->type);
    if (n > SIZE_MAX / 4 || reply->elements != 4 * n || (n && !reply->element))
        return sl_err(err, SLUICE_ELIMITER,
                      "redis %s: malformed script reply: %zu elements for %zu decisions", where,
                      reply->elements, n);
    for (i = 0; i < n; i++) {
        int rc = decode_one(reply->element + 4 * i, i, &out[i], where, err);
        if (rc)
            return rc;
    }
    return 0;
}
